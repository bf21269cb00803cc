// fastmi InfoGAN CPU kernels: the losses and MI bounds in one pass over the rows, and
// all their gradients in one more pass that recomputes from the inputs. No torch
// headers: kernels.h is the interface, binding.cpp the torch glue.
//
// The math is csrc/infogan/math.h (ARCHITECTURE.md sections 3 to 5); the vector lanes
// are csrc/common/cpu/lanes.h, the threading csrc/common/cpu/parallel.h. This file holds
// the loops around them:
//
// - Lanes of rows. Q rows are taken kLanes at a time and transposed into a small
//   column-major tile, so each column op runs over kLanes rows at once: for the small W
//   of real InfoGAN specs this vectorizes where a row (10 logits, 2 mu, 2 logvar) is too
//   short to. A categorical code with K > lane_max_k is instead vectorized along its own
//   row, straight from q. Either way its log-sum-exp is csrc/common/lse.h's: lse_of with a
//   row per lane, lse_from_max for a row spread over the lanes (row_lse).
// - Determinism. Rows are split into chunks whose size depends only on (B, W); each
//   chunk sums its rows in a fixed order into its own slot, and the slots are added in
//   chunk order. The result is bit-identical from run to run and for any thread count.
// - Validation for free. The forward checks every categorical index and bernoulli value
//   as it reads them, and reports the first bad one (row-major) after the pass; reads
//   are clamped, so a bad index is never dereferenced.
// - Nothing per-element is saved: the backward recomputes softmax / sigmoid from the
//   inputs, and writes the gradients into fresh buffers the glue allocates.

#include "kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "../../common/cpu/lanes.h"
#include "../../common/cpu/parallel.h"
#include "../../common/lse.h"

namespace fastmi {
namespace infogan {
namespace {

constexpr int64_t kChunkElems = 16384;  // q elements per parallel chunk

// Which q columns go into the lane tile, and where each block sits.
struct Layout {
  int64_t W = 0;
  std::vector<int64_t> tile_cols;   // q column of each tile row
  std::vector<int64_t> cat_col;     // per code: q column of its first logit
  std::vector<int64_t> cat_tile;    // per code: tile row of its first logit, or -1
  int64_t bern_tile = 0, mu_tile = 0, logvar_tile = 0;

  Layout(const Problem& p, int64_t lane_max_k) : W(p.width()) {
    int64_t col = 0;
    for (int64_t k : p.cat_sizes) {
      cat_col.push_back(col);
      cat_tile.push_back(k <= lane_max_k ? static_cast<int64_t>(tile_cols.size()) : -1);
      if (k <= lane_max_k)
        for (int64_t j = 0; j < k; ++j) tile_cols.push_back(col + j);
      col += k;
    }
    bern_tile = static_cast<int64_t>(tile_cols.size());
    mu_tile = bern_tile + p.nb;
    logvar_tile = mu_tile + p.n;
    for (; col < W; ++col) tile_cols.push_back(col);
    identity = tile_width() == W;
  }
  int64_t tile_width() const { return static_cast<int64_t>(tile_cols.size()); }
  bool identity = false;  // every q column is tiled, in order: tile[t] is column t
};

// Rows per chunk: a function of W alone.
int64_t chunk_rows(int64_t W) { return fastmi::chunk_rows(W, kChunkElems, kLanes); }

// Reads the categorical indices of code k for the lanes; an index outside [0, K) is
// recorded and replaced by 0, so it is never dereferenced.
template <typename I>
void load_indices(const I* cat, int64_t m, int64_t k, int64_t K, int64_t r0, int64_t nr, int64_t* idx,
                  CodeError* err) {
  for (int64_t r = 0; r < kLanes; ++r) {
    int64_t c = r < nr ? static_cast<int64_t>(cat[(r0 + r) * m + k]) : 0;
    if (c < 0 || c >= K) {
      if (err != nullptr && (r0 + r) * m + k < err->cat_at) {
        err->cat_at = (r0 + r) * m + k;
        err->cat_value = c;
      }
      c = 0;
    }
    idx[r] = c;
  }
}

// The lanes' (already clamped) indices as a vector of the accumulation type's integer
// lanes, built in registers, so a one-hot select replaces lane-by-lane stores.
template <typename A, size_t... R>
typename LaneOf<A>::I index_lanes(const int64_t* idx, std::index_sequence<R...>) {
  using E = typename LaneOf<A>::E;
  return typename LaneOf<A>::I{static_cast<E>(idx[R])...};
}
template <typename A>
typename LaneOf<A>::I index_lanes(const int64_t* idx) {
  return index_lanes<A>(idx, std::make_index_sequence<kLanes>{});
}

// Loads rows [r0, r0 + nr) of the tiled q columns: tile[t] holds column tile_cols[t].
// When every column is tiled, all kLanes rows are live and W >= 8, the columns come in
// as windows of 8 (the last window overlaps the one before it instead of leaving a
// ragged tail), transposed in registers; otherwise column by column, gathered.
template <typename T, typename V>
FASTMI_FN void load_tile(const T* q, int64_t W, const Layout& lay, int64_t r0, int64_t nr, V* tile) {
  const T* base = q + r0 * W;
  if (lay.identity && nr == kLanes && W >= kLanes) {
    for (int64_t c0 = 0;; c0 += kLanes) {
      c0 = std::min(c0, W - kLanes);
      V window[kLanes];
      for (int64_t r = 0; r < kLanes; ++r) window[r] = load_row<V>(base + r * W + c0, kLanes, 0);
      transpose8(window);
      for (int64_t i = 0; i < kLanes; ++i) tile[c0 + i] = window[i];
      if (c0 + kLanes >= W) return;
    }
  }
  for (int64_t t = 0; t < lay.tile_width(); ++t) tile[t] = load_lanes<V>(base + lay.tile_cols[t], W, nr);
}

// Stores the tiled gradient columns of rows [r0, r0 + nr) into grad_q, converted to T:
// the inverse of load_tile (an overlapping last window writes its first columns twice,
// with the same values).
template <typename T, typename V>
FASTMI_FN void store_tile(T* grad_q, int64_t W, const Layout& lay, int64_t r0, int64_t nr, const V* gtile) {
  T* base = grad_q + r0 * W;
  if (lay.identity && nr == kLanes && W >= kLanes) {
    for (int64_t c0 = 0;; c0 += kLanes) {
      c0 = std::min(c0, W - kLanes);
      V window[kLanes];
      for (int64_t i = 0; i < kLanes; ++i) window[i] = gtile[c0 + i];
      transpose8(window);
      for (int64_t r = 0; r < kLanes; ++r) store_row(base + r * W + c0, window[r], kLanes);
      if (c0 + kLanes >= W) return;
    }
  }
  for (int64_t t = 0; t < lay.tile_width(); ++t)
    for (int64_t r = 0; r < nr; ++r) base[r * W + lay.tile_cols[t]] = from_lane<T>(gtile[t][r]);
}

// The log-sum-exp of one row's K logits x[0..K) (csrc/common/lse.h), vectorized along
// the row: vector c holds x[c * kLanes + r] in lane r, and -inf past K, whose exp is
// (next to) 0. The max is taken across every lane first, so that lse_from_max's per-lane
// sums share it and add up to the row's. When ex is given, ex[c] receives vector c's
// exp(x - max): the softmax numerators, one exp per logit.
template <typename T, typename A>
Lse<A> row_lse(const T* x, int64_t K, typename LaneOf<A>::V* ex) {
  using V = typename LaneOf<A>::V;
  const A neg_inf = -std::numeric_limits<A>::infinity();
  auto vec = [&](int64_t c) { return load_row<V>(x + c * kLanes, std::min(kLanes, K - c * kLanes), neg_inf); };
  const int64_t vectors = (K + kLanes - 1) / kLanes;
  V vmx = Lane<V>::splat(neg_inf);
  for (int64_t c = 0; c < vectors; ++c) vmx = Lane<V>::max(vec(c), vmx);
  const A mx = hmax(vmx);
  return {mx, hsum(lse_from_max(Lane<V>::splat(mx), vectors, vec, ex).s)};
}

// ---- forward ---------------------------------------------------------------------------

// Adds the partial sums of rows [lo, hi) into acc[sum] (one vector of lanes per sum).
template <typename T, typename I, typename A>
void forward_rows(const Batch<T, I, A>& b, const Problem& p, const Layout& lay, int64_t lo, int64_t hi,
                  typename LaneOf<A>::V* acc, typename LaneOf<A>::V* tile, CodeError* err) {
  using V = typename LaneOf<A>::V;
  using L = Lane<V>;
  const auto iota = lane_iota<typename LaneOf<A>::I>();
  const int64_t m = p.m(), W = lay.W;
  const V zero{};

  const int64_t real_hi = std::min(hi, b.Br);
  for (int64_t r0 = lo; r0 < real_hi; r0 += kLanes) {
    const int64_t nr = std::min(kLanes, real_hi - r0);
    const auto live = iota < static_cast<typename LaneOf<A>::E>(nr);
    const SoftplusPair<V> sp = softplus_pair(load_row<V>(b.real + r0, nr, 0));
    acc[kRealNeg] += live ? sp.neg : zero;
    acc[kRealPos] += live ? sp.pos : zero;
  }

  const int64_t q_hi = std::min(hi, b.Bq);
  const V fixed_logvar = L::splat(static_cast<A>(p.fixed_logvar));
  const V fixed_inv_var = L::splat(static_cast<A>(std::exp(-p.fixed_logvar)));
  for (int64_t r0 = lo; r0 < q_hi; r0 += kLanes) {
    const int64_t nr = std::min(kLanes, q_hi - r0);
    const auto live = iota < static_cast<typename LaneOf<A>::E>(nr);
    load_tile(b.q, W, lay, r0, nr, tile);

    if (b.fake != nullptr) {
      const SoftplusPair<V> sp = softplus_pair(load_row<V>(b.fake + r0, nr, 0));
      acc[kFakePos] += live ? sp.pos : zero;
      acc[kFakeNeg] += live ? sp.neg : zero;
    }

    for (int64_t k = 0; k < m; ++k) {
      const int64_t K = p.cat_sizes[k];
      int64_t idx[kLanes];
      load_indices(b.cat, m, k, K, r0, nr, idx, err);
      V e{};
      if (lay.cat_tile[k] >= 0) {
        const V* x = tile + lay.cat_tile[k];
        const Lse<V> lse = lse_of(K, x, static_cast<V*>(nullptr));
        const auto target = index_lanes<A>(idx);
        V picked{};
        auto j_lanes = decltype(target){};   // j in every lane
        for (int64_t j = 0; j < K; ++j, j_lanes += 1) picked = target == j_lanes ? x[j] : picked;
        e = lse_minus(lse, picked);
      } else {
        // Each row's (max, sum) into a lane, then one vector lse_log for the kLanes rows:
        // a scalar log per row cost more than the libm logf it replaced (12% of this pass
        // at K = 130). Lanes past nr hold log(1) = 0 and are masked below.
        Lse<V> lse{zero, L::splat(A(1))};
        V picked{};
        for (int64_t r = 0; r < nr; ++r) {
          const T* x = b.q + (r0 + r) * W + lay.cat_col[k];
          const Lse<A> row = row_lse<T, A>(x, K, nullptr);
          lse.m[r] = row.m;
          lse.s[r] = row.s;
          picked[r] = to_lane<A>(x[idx[r]]);
        }
        e = lse_minus(lse, picked);
      }
      acc[kCat0 + k] += live ? e : zero;
    }

    for (int64_t j = 0; j < p.nb; ++j) {
      const V c = load_lanes<V>(b.bern + r0 * p.nb + j, p.nb, nr);
      for (int64_t r = 0; r < nr; ++r) {
        if (!(c[r] == A(0) || c[r] == A(1)) && err != nullptr && (r0 + r) * p.nb + j < err->bern_at) {
          err->bern_at = (r0 + r) * p.nb + j;
          err->bern_value = static_cast<double>(c[r]);
        }
      }
      acc[kBern] += live ? bernoulli_nll(tile[lay.bern_tile + j], c) : zero;
    }

    for (int64_t d = 0; d < p.n; ++d) {
      const V c = load_lanes<V>(b.cont + r0 * p.n + d, p.n, nr);
      const V mu = tile[lay.mu_tile + d];
      V h;
      if (p.learned_std) {
        const V s = tile[lay.logvar_tile + d];
        h = gaussian_nll(mu, s, fm_exp(-s), c);
      } else {
        h = gaussian_nll(mu, fixed_logvar, fixed_inv_var, c);
      }
      acc[kCont] += live ? h : zero;
    }
  }
}

}  // namespace

template <typename T, typename I, typename A>
void forward_kernel(const Batch<T, I, A>& b, const Problem& p, const RunConfig& cfg, double* losses,
                    double* stats, CodeError* err) {
  using V = typename LaneOf<A>::V;
  const Layout lay(p, cfg.lane_max_k);
  const int64_t S = kFixedSums + p.m();
  const int64_t rows = std::max(b.Br, b.Bq);
  const int64_t per_chunk = chunk_rows(lay.W);
  const int64_t chunks = (rows + per_chunk - 1) / per_chunk;
  std::vector<double> partial(chunks * S, 0.0);
  std::vector<CodeError> errors(chunks);

  for_each_chunk(chunks, cfg.threads, [&](auto next) {
    Scratch<V> acc(S), tile(lay.tile_width());
    for (int64_t c = next(); c < chunks; c = next()) {
      std::fill(acc.data(), acc.data() + S, V{});
      forward_rows(b, p, lay, c * per_chunk, std::min(rows, (c + 1) * per_chunk), acc.data(), tile.data(),
                   &errors[c]);
      for (int64_t s = 0; s < S; ++s) partial[c * S + s] = static_cast<double>(hsum(acc.data()[s]));
    }
  });

  std::vector<double> sums(S, 0.0);
  for (int64_t c = 0; c < chunks; ++c) {
    for (int64_t s = 0; s < S; ++s) sums[s] += partial[c * S + s];
    err->merge(errors[c]);
  }
  finalize(sums.data(), p.cat_sizes.data(), p.params<double>(), b.Br, b.fake != nullptr ? b.Bq : 0, b.Bq,
           losses, stats);
}

// ---- backward --------------------------------------------------------------------------

namespace {

template <typename T, typename I, typename A>
void backward_rows(const Batch<T, I, A>& b, const Problem& p, const Layout& lay, const GradScales<A>& sc,
                   int64_t lo, int64_t hi, T* grad_real, T* grad_fake, T* grad_q, typename LaneOf<A>::V* tile,
                   typename LaneOf<A>::V* gtile, typename LaneOf<A>::V* row_ex) {
  using V = typename LaneOf<A>::V;
  using L = Lane<V>;
  const int64_t m = p.m(), W = lay.W;

  // grad_real / grad_fake are null where no loss with an upstream grad uses them
  const int64_t real_hi = grad_real != nullptr ? std::min(hi, b.Br) : lo;
  for (int64_t r0 = lo; r0 < real_hi; r0 += kLanes) {
    const int64_t nr = std::min(kLanes, real_hi - r0);
    const V g = real_grad(load_row<V>(b.real + r0, nr, 0), sc);
    store_row(grad_real + r0, g, nr);
  }

  const int64_t q_hi = std::min(hi, b.Bq);
  const V fixed_inv_var = L::splat(static_cast<A>(std::exp(-p.fixed_logvar)));
  for (int64_t r0 = lo; r0 < q_hi; r0 += kLanes) {
    const int64_t nr = std::min(kLanes, q_hi - r0);
    load_tile(b.q, W, lay, r0, nr, tile);

    if (grad_fake != nullptr) {
      const V g = fake_grad(load_row<V>(b.fake + r0, nr, 0), sc, p.minimax);
      store_row(grad_fake + r0, g, nr);
    }

    for (int64_t k = 0; k < m; ++k) {
      const int64_t K = p.cat_sizes[k];
      int64_t idx[kLanes];
      load_indices(b.cat, m, k, K, r0, nr, idx, nullptr);
      if (lay.cat_tile[k] >= 0) {
        const V* x = tile + lay.cat_tile[k];
        V* g = gtile + lay.cat_tile[k];
        const Lse<V> lse = lse_of(K, x, g);  // g <- exp(x - max)
        const V scale = sc.cat / lse.s, cat = L::splat(sc.cat), zero{};
        const auto target = index_lanes<A>(idx);
        auto j_lanes = decltype(target){};   // j in every lane
        for (int64_t j = 0; j < K; ++j, j_lanes += 1)   // scale (softmax - onehot), one fma
          g[j] = g[j] * scale - (target == j_lanes ? cat : zero);
      } else {
        for (int64_t r = 0; r < nr; ++r) {
          const T* x = b.q + (r0 + r) * W + lay.cat_col[k];
          T* gx = grad_q + (r0 + r) * W + lay.cat_col[k];
          const A rs = A(1) / row_lse<T, A>(x, K, row_ex).s;   // row_ex <- exp(x - max)
          // The numerators read back as values, zero past K: the padding lanes of the last
          // vector hold exp(-87) = 1.6e-38, which the scaling below would make subnormal,
          // and subnormal arithmetic is slow (it cost 12% of this pass at K = 130).
          const A* ex = reinterpret_cast<const A*>(row_ex);
          for (int64_t j0 = 0; j0 < K; j0 += kLanes) {
            const int64_t n = std::min(kLanes, K - j0);
            V p = load_row<V>(ex + j0, n, A(0)) * rs;
            if (idx[r] >= j0 && idx[r] < j0 + n) p[idx[r] - j0] -= A(1);   // - onehot, at A precision
            store_row(gx + j0, p * sc.cat, n);
          }
        }
      }
    }

    for (int64_t j = 0; j < p.nb; ++j) {
      const V c = load_lanes<V>(b.bern + r0 * p.nb + j, p.nb, nr);
      gtile[lay.bern_tile + j] = sc.cat * bernoulli_grad(tile[lay.bern_tile + j], c);
    }

    for (int64_t d = 0; d < p.n; ++d) {
      const V c = load_lanes<V>(b.cont + r0 * p.n + d, p.n, nr);
      const V mu = tile[lay.mu_tile + d];
      if (p.learned_std) {
        const V inv_var = fm_exp(-tile[lay.logvar_tile + d]);
        gtile[lay.mu_tile + d] = sc.cont * gaussian_grad_mu(mu, inv_var, c);
        gtile[lay.logvar_tile + d] = sc.cont * gaussian_grad_logvar(mu, inv_var, c);
      } else {
        gtile[lay.mu_tile + d] = sc.cont * gaussian_grad_mu(mu, fixed_inv_var, c);
      }
    }

    store_tile(grad_q, W, lay, r0, nr, gtile);
  }
}

}  // namespace

template <typename T, typename I, typename A>
void backward_kernel(const Batch<T, I, A>& b, const Problem& p, const RunConfig& cfg, double gD, double gG,
                     double gI, T* grad_real, T* grad_fake, T* grad_q) {
  using V = typename LaneOf<A>::V;
  const Layout lay(p, cfg.lane_max_k);
  const GradScales<A> sc = grad_scales(p.params<A>(), A(gD), A(gG), A(gI), b.Br, b.Bq);
  const int64_t rows = std::max(b.Br, b.Bq);
  const int64_t per_chunk = chunk_rows(lay.W);
  const int64_t chunks = (rows + per_chunk - 1) / per_chunk;
  int64_t max_k = 1;
  for (int64_t k : p.cat_sizes) max_k = std::max(max_k, k);
  for_each_chunk(chunks, cfg.threads, [&](auto next) {
    const int64_t Wt = std::max<int64_t>(lay.tile_width(), 1);
    Scratch<V> tile(Wt), gtile(Wt);
    Scratch<V> row_ex((max_k + kLanes - 1) / kLanes);
    for (int64_t c = next(); c < chunks; c = next())
      backward_rows(b, p, lay, sc, c * per_chunk, std::min(rows, (c + 1) * per_chunk), grad_real, grad_fake,
                    grad_q, tile.data(), gtile.data(), row_ex.data());
  });
}

FASTMI_INFOGAN_CPU_ALL_KERNELS()

}  // namespace infogan
}  // namespace fastmi

