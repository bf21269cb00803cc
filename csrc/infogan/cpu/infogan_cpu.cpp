// fastmi fused CPU kernel: the InfoGAN losses and MI bounds in one pass over the rows,
// and all their gradients in one more pass that recomputes from the inputs.
//
// The math is csrc/infogan/math.h (ARCHITECTURE.md sections 3 to 5). This file
// holds the loops around it:
//
// - Lanes of rows. Q rows are taken kLanes at a time and transposed into a small
//   column-major tile, so each column op runs over kLanes rows at once: for the small W
//   of real InfoGAN specs this vectorizes where a row (10 logits, 2 mu, 2 logvar) is too
//   short to. A categorical code with K > kLaneMaxK is instead vectorized along its own
//   row, straight from q.
// - Determinism. Rows are split into chunks whose size depends only on (B, W); each
//   chunk sums its rows in a fixed order into its own slot, and the slots are added in
//   chunk order. The result is bit-identical from run to run and for any thread count.
// - Validation for free. The forward checks every categorical index and bernoulli value
//   as it reads them, and reports the first bad one (row-major) after the pass; reads
//   are clamped, so a bad index is never dereferenced.
// - Nothing per-element is saved: the backward recomputes softmax / sigmoid from the
//   inputs, and writes fresh gradient tensors (never the caller's).
//
// Two Python entry points share the kernels: forward_op / backward_op (registered as
// torch.library custom ops by fastmi/infogan/cpu.py, for torch.compile) and loss, a
// C++ autograd function that the eager path calls to skip the op boundary.

#include <torch/extension.h>

#include <ATen/EmptyTensor.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <utility>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "../../common/cpu/grad_pool.h"
#include "../check_inputs.h"
#include "../math.h"

namespace fastmi {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

constexpr int64_t kLanes = 8;          // rows per tile: one AVX2 vector of floats
constexpr int64_t kLaneMaxK = 24;      // categorical codes up to this K use the tile (measured:
                                       // benchmarks/cpu_layout.py)
int64_t g_lane_max_k = kLaneMaxK;      // settable, for that measurement
constexpr int64_t kChunkElems = 16384; // q elements per parallel chunk

// ---- the problem: spec and options, mirrored from fastmi/problem.py ------------------
struct Problem {
  std::vector<int64_t> cat_sizes;
  int64_t nb = 0, n = 0;
  bool learned_std = true, minimax = false, sum_reduction = false;
  double fixed_logvar = 0, prior_entropy = 0, lambda_cat = 1, lambda_cont = 1, real_label = 1;

  int64_t m() const { return static_cast<int64_t>(cat_sizes.size()); }
  int64_t width() const {
    int64_t w = nb + n * (learned_std ? 2 : 1);
    for (int64_t k : cat_sizes) w += k;
    return w;
  }
  template <typename A>
  LossParams<A> params() const {
    return {static_cast<int>(m()), static_cast<int>(nb), static_cast<int>(n), learned_std, minimax,
            sum_reduction, A(fixed_logvar), A(prior_entropy), A(lambda_cat), A(lambda_cont),
            A(real_label)};
  }
};

// Which q columns go into the lane tile, and where each block sits.
struct Layout {
  int64_t W = 0;
  std::vector<int64_t> tile_cols;   // q column of each tile row
  std::vector<int64_t> cat_col;     // per code: q column of its first logit
  std::vector<int64_t> cat_tile;    // per code: tile row of its first logit, or -1
  int64_t bern_tile = 0, mu_tile = 0, logvar_tile = 0;

  explicit Layout(const Problem& p) : W(p.width()) {
    int64_t col = 0;
    for (int64_t k : p.cat_sizes) {
      cat_col.push_back(col);
      cat_tile.push_back(k <= g_lane_max_k ? static_cast<int64_t>(tile_cols.size()) : -1);
      if (k <= g_lane_max_k)
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

// The first invalid code a pass met, row-major (row * codes + code).
struct CodeError {
  int64_t cat_at = std::numeric_limits<int64_t>::max();
  int64_t cat_value = 0;
  int64_t bern_at = std::numeric_limits<int64_t>::max();
  double bern_value = 0;

  void merge(const CodeError& o) {
    if (o.cat_at < cat_at) { cat_at = o.cat_at; cat_value = o.cat_value; }
    if (o.bern_at < bern_at) { bern_at = o.bern_at; bern_value = o.bern_value; }
  }
};

// ---- vector lanes -----------------------------------------------------------------------
// kLanes rows are processed at once as one GCC vector per column: plain arithmetic on
// these types compiles to AVX2 / AVX-512 (or SSE) code, and ?: to per-lane blends.
typedef float f32xL __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t i32xL __attribute__((vector_size(kLanes * sizeof(int32_t))));
typedef double f64xL __attribute__((vector_size(kLanes * sizeof(double))));
typedef int64_t i64xL __attribute__((vector_size(kLanes * sizeof(int64_t))));

}  // namespace

template <>
struct Lane<f32xL> {
  using S = float;
  using I = i32xL;
  static FASTMI_FN f32xL splat(float s) { return f32xL{} + s; }
  static FASTMI_FN i32xL to_int(f32xL x) { return __builtin_convertvector(x, i32xL); }
  static FASTMI_FN f32xL to_float(i32xL i) { return __builtin_convertvector(i, f32xL); }
  static FASTMI_FN i32xL bits(f32xL f) { return reinterpret_cast<i32xL>(f); }
  static FASTMI_FN f32xL from_bits(i32xL b) { return reinterpret_cast<f32xL>(b); }
  static FASTMI_FN f32xL exp(f32xL x) { return exp_poly(x); }
  static FASTMI_FN f32xL exp_nonpos(f32xL x) { return exp_nonpos_poly(x); }
  static FASTMI_FN f32xL log(f32xL x) { return log_poly(x); }
  static FASTMI_FN f32xL log1p(f32xL x) { return log1p_poly(x); }
  // a > b ? a : b (NaN in either: b), one instruction: GCC keeps the select otherwise.
  static FASTMI_FN f32xL max(f32xL a, f32xL b) {
#if defined(__AVX__)
    return _mm256_max_ps(a, b);
#else
    return a > b ? a : b;
#endif
  }
  static FASTMI_FN f32xL abs(f32xL x) { return from_bits(bits(x) & 0x7fffffff); }
};

// float64 is the accuracy path (gradcheck), not a speed path: libm, lane by lane.
template <>
struct Lane<f64xL> {
  using S = double;
  using I = i64xL;
  static FASTMI_FN f64xL splat(double s) { return f64xL{} + s; }
  template <typename F>
  static FASTMI_FN f64xL map(f64xL x, F f) {
    for (int64_t r = 0; r < kLanes; ++r) x[r] = f(x[r]);
    return x;
  }
  static FASTMI_FN f64xL exp(f64xL x) { return map(x, [](double v) { return std::exp(v); }); }
  static FASTMI_FN f64xL exp_nonpos(f64xL x) { return exp(x); }
  static FASTMI_FN f64xL log(f64xL x) { return map(x, [](double v) { return std::log(v); }); }
  static FASTMI_FN f64xL log1p(f64xL x) { return map(x, [](double v) { return std::log1p(v); }); }
  static FASTMI_FN f64xL max(f64xL a, f64xL b) { return a > b ? a : b; }
  static FASTMI_FN f64xL abs(f64xL x) { return x < 0.0 ? -x : x; }
};

namespace {

template <typename A>
struct LaneOf;
template <>
struct LaneOf<float> { using V = f32xL; using I = i32xL; using E = int32_t; };
template <>
struct LaneOf<double> { using V = f64xL; using I = i64xL; using E = int64_t; };

// 0, 1, ..., kLanes - 1, as the lane type's mask type: `iota < nr` masks the live lanes.
template <typename I>
I lane_iota() {
  I iota{};
  for (int64_t r = 0; r < kLanes; ++r) iota[r] = r;
  return iota;
}

template <typename V>
typename Lane<V>::S hsum(V v) {  // in lane order: deterministic
  typename Lane<V>::S s = 0;
  for (int64_t r = 0; r < kLanes; ++r) s += v[r];
  return s;
}

// A thread's scratch buffer of n values, on cache lines of its own: two threads' small
// heap blocks can share a line, and the per-row read-modify-writes of the accumulators
// then bounce it between cores (measured: 2 threads ran 4x slower than 1).
template <typename T>
class Scratch {
 public:
  explicit Scratch(int64_t n)
      : data_(static_cast<T*>(std::aligned_alloc(kLine, round_up(std::max<int64_t>(n, 1) * sizeof(T))))) {
    TORCH_CHECK(data_ != nullptr, "fastmi cpu: out of memory for a scratch buffer");
    std::uninitialized_value_construct_n(data_, std::max<int64_t>(n, 1));
  }
  ~Scratch() { std::free(data_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* data() const { return data_; }

 private:
  static constexpr size_t kLine = 64;
  static size_t round_up(size_t bytes) { return (bytes + kLine - 1) / kLine * kLine; }
  T* data_;
};

// Raw pointers of one call. T: logits / q dtype; I: index dtype; A: accumulation type.
template <typename T, typename I, typename A>
struct Batch {
  const T* real = nullptr;
  int64_t Br = 0;
  const T* fake = nullptr;
  const T* q = nullptr;
  int64_t Bq = 0;
  const I* cat = nullptr;
  const A* bern = nullptr;
  const A* cont = nullptr;
};

// Rows per chunk: a function of W alone, so the summation order never depends on the
// thread count.
int64_t chunk_rows(int64_t W) {
  int64_t rows = kChunkElems / std::max<int64_t>(W, 1);
  rows = (rows / kLanes) * kLanes;
  return std::max(rows, kLanes);
}

// Runs worker(next) on each thread, where next() hands out the chunk indices 0, 1, ...
// one at a time (>= chunks: done). Handed out as threads come free, not split up front:
// a thread that the OS or a VM's neighbour holds up then delays its current chunk, not a
// fixed half of the work. Each chunk writes only its own rows and partial-sum slot, so
// which thread runs it changes no bit of the result. One chunk runs on the caller,
// without waking the pool.
template <typename Worker>
void for_each_chunk(int64_t chunks, Worker&& worker) {
  std::atomic<int64_t> counter{0};
  auto next = [&] { return counter.fetch_add(1, std::memory_order_relaxed); };
  const int64_t threads = std::min<int64_t>(chunks, at::get_num_threads());
  if (threads <= 1) worker(next);
  else at::parallel_for(0, threads, 1, [&](int64_t, int64_t) { worker(next); });
}

// A vector whose lane r is src[r * stride] (converted to A), built in registers from
// kLanes scalar loads: writing lanes one by one through memory and then reading the
// vector back stalls store-to-load forwarding. Lanes r >= nr repeat lane 0, so they
// read valid memory; their results are masked out.
template <typename V, typename T, size_t... R>
FASTMI_FN V gather_lanes(const T* src, int64_t stride, int64_t nr, std::index_sequence<R...>) {
  using S = typename Lane<V>::S;
  return V{static_cast<S>(src[(static_cast<int64_t>(R) < nr ? static_cast<int64_t>(R) : 0) * stride])...};
}
template <typename V, typename T>
FASTMI_FN V load_lanes(const T* src, int64_t stride, int64_t nr) {
  return gather_lanes<V>(src, stride, nr, std::make_index_sequence<kLanes>{});
}

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

// Softmax denominators, kept as (max, sum of exp(x - max)) so that the forward takes
// log-sum-exp = max + log(sum) and the backward softmax = exp(x - max) / sum.
template <typename V>
struct ExpSum {
  V mx, s;
};

// The ExpSum of each lane's K logits x[0..K); when ex is given it receives exp(x - max),
// so the backward pays one exp per logit. A NaN logit makes s NaN, whatever max did.
template <typename V>
FASTMI_FN ExpSum<V> lane_exp_sums(const V* x, int64_t K, V* ex) {
  V mx = x[0], s{};
  for (int64_t j = 1; j < K; ++j) mx = Lane<V>::max(x[j], mx);
  for (int64_t j = 0; j < K; ++j) {
    const V e = fm_exp_nonpos(x[j] - mx);
    if (ex != nullptr) ex[j] = e;
    s += e;
  }
  return {mx, s};
}

// n <= kLanes contiguous values x[0..n) as a vector, converted to A; lanes past n get
// `pad`. float (and double) rows are one vector load, bfloat16 a widening shift.
template <typename V, typename T>
FASTMI_FN V load_row(const T* x, int64_t n, typename Lane<V>::S pad) {
  using S = typename Lane<V>::S;
  V v;
  if (n == kLanes) {
    if constexpr (std::is_same_v<T, S>) {
      memcpy(&v, x, sizeof v);
      return v;
    } else if constexpr (std::is_same_v<T, c10::BFloat16> && std::is_same_v<S, float>) {
      typedef uint16_t u16xL __attribute__((vector_size(kLanes * sizeof(uint16_t))));
      u16xL raw;
      memcpy(&raw, x, sizeof raw);
      return reinterpret_cast<V>(__builtin_convertvector(raw, i32xL) << 16);
    } else {
      return load_lanes<V>(x, 1, kLanes);
    }
  }
  v = Lane<V>::splat(pad);
  for (int64_t r = 0; r < n; ++r) v[r] = static_cast<S>(x[r]);
  return v;
}

// Stores lanes [0, n) of v to dst, converted to T.
template <typename T, typename V>
FASTMI_FN void store_row(T* dst, V v, int64_t n) {
  if constexpr (std::is_same_v<T, typename Lane<V>::S>) {
    if (n == kLanes) {
      memcpy(dst, &v, sizeof v);
      return;
    }
  }
  for (int64_t r = 0; r < n; ++r) dst[r] = static_cast<T>(v[r]);
}

// Transposes 8 vectors of 8 lanes in registers (its own inverse): rows of 8 q columns
// in, 8 columns of 8 rows out. __builtin_shuffle with constant masks compiles to the
// unpack / shuffle / permute sequence of an AVX 8x8 transpose.
template <typename V>
FASTMI_FN void transpose8(V* v) {
  static_assert(kLanes == 8, "transpose8 is an 8x8 transpose");
  using I = typename LaneOf<typename Lane<V>::S>::I;
  auto mix = [](V a, V b, I mask) { return __builtin_shuffle(a, b, mask); };
  const I lo{0, 8, 1, 9, 4, 12, 5, 13}, hi{2, 10, 3, 11, 6, 14, 7, 15};
  const I even{0, 1, 8, 9, 4, 5, 12, 13}, odd{2, 3, 10, 11, 6, 7, 14, 15};
  const I low{0, 1, 2, 3, 8, 9, 10, 11}, high{4, 5, 6, 7, 12, 13, 14, 15};
  V t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = mix(v[2 * i], v[2 * i + 1], lo);
    t[2 * i + 1] = mix(v[2 * i], v[2 * i + 1], hi);
  }
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < 2; ++i) {
      u[4 * h + 2 * i] = mix(t[4 * h + i], t[4 * h + i + 2], even);
      u[4 * h + 2 * i + 1] = mix(t[4 * h + i], t[4 * h + i + 2], odd);
    }
  // u[c] holds column c (low half) and c + 4 (high half) of rows 0-3, u[4 + c] of rows 4-7
  for (int c = 0; c < 4; ++c) {
    v[c] = mix(u[c], u[4 + c], low);
    v[c + 4] = mix(u[c], u[4 + c], high);
  }
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
    for (int64_t r = 0; r < nr; ++r) base[r * W + lay.tile_cols[t]] = static_cast<T>(gtile[t][r]);
}

// The (max, sum) of one row's K logits, kLanes logits at a time; lanes past K read
// -inf, whose exp is (next to) 0. When ex is given it receives exp(x - max) for j < K.
template <typename T, typename A>
std::pair<A, A> row_exp_sum(const T* x, int64_t K, A* ex) {
  using V = typename LaneOf<A>::V;
  const A neg_inf = -std::numeric_limits<A>::infinity();
  V vmx = Lane<V>::splat(neg_inf);
  for (int64_t j0 = 0; j0 < K; j0 += kLanes) {
    const V v = load_row<V>(x + j0, std::min(kLanes, K - j0), neg_inf);
    vmx = Lane<V>::max(v, vmx);
  }
  A mx = vmx[0];
  for (int64_t r = 1; r < kLanes; ++r) mx = vmx[r] > mx ? vmx[r] : mx;
  V vs{};
  for (int64_t j0 = 0; j0 < K; j0 += kLanes) {
    const int64_t n = std::min(kLanes, K - j0);
    const V e = fm_exp_nonpos(load_row<V>(x + j0, n, neg_inf) - mx);
    vs += e;
    if (ex != nullptr) store_row(ex + j0, e, n);
  }
  return {mx, hsum(vs)};
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
        const ExpSum<V> es = lane_exp_sums(x, K, static_cast<V*>(nullptr));
        const auto target = index_lanes<A>(idx);
        V picked{};
        auto j_lanes = decltype(target){};   // j in every lane
        for (int64_t j = 0; j < K; ++j, j_lanes += 1) picked = target == j_lanes ? x[j] : picked;
        e = es.mx + fm_log(es.s) - picked;
      } else {
        for (int64_t r = 0; r < nr; ++r) {
          const T* x = b.q + (r0 + r) * W + lay.cat_col[k];
          const auto [mx, sum] = row_exp_sum<T, A>(x, K, nullptr);
          e[r] = mx + std::log(sum) - static_cast<A>(x[idx[r]]);
        }
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

template <typename T, typename I, typename A>
void forward_kernel(const Batch<T, I, A>& b, const Problem& p, double* losses, double* stats,
                    CodeError* err) {
  using V = typename LaneOf<A>::V;
  const Layout lay(p);
  const int64_t S = kFixedSums + p.m();
  const int64_t rows = std::max(b.Br, b.Bq);
  const int64_t per_chunk = chunk_rows(lay.W);
  const int64_t chunks = (rows + per_chunk - 1) / per_chunk;
  std::vector<double> partial(chunks * S, 0.0);
  std::vector<CodeError> errors(chunks);

  for_each_chunk(chunks, [&](auto next) {
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

template <typename T, typename I, typename A>
void backward_rows(const Batch<T, I, A>& b, const Problem& p, const Layout& lay, const GradScales<A>& sc,
                   int64_t lo, int64_t hi, T* grad_real, T* grad_fake, T* grad_q, typename LaneOf<A>::V* tile,
                   typename LaneOf<A>::V* gtile, A* row_ex) {
  using V = typename LaneOf<A>::V;
  using L = Lane<V>;
  const int64_t m = p.m(), W = lay.W, Wt = lay.tile_width();

  const int64_t real_hi = std::min(hi, b.Br);
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

    if (b.fake != nullptr) {
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
        const ExpSum<V> es = lane_exp_sums(x, K, g);  // g <- exp(x - max)
        const V scale = sc.cat / es.s, cat = L::splat(sc.cat), zero{};
        const auto target = index_lanes<A>(idx);
        auto j_lanes = decltype(target){};   // j in every lane
        for (int64_t j = 0; j < K; ++j, j_lanes += 1)   // scale (softmax - onehot), one fma
          g[j] = g[j] * scale - (target == j_lanes ? cat : zero);
      } else {
        for (int64_t r = 0; r < nr; ++r) {
          const T* x = b.q + (r0 + r) * W + lay.cat_col[k];
          T* gx = grad_q + (r0 + r) * W + lay.cat_col[k];
          const A rs = A(1) / row_exp_sum<T, A>(x, K, row_ex).second;
          for (int64_t j0 = 0; j0 < K; j0 += kLanes) {
            const int64_t n = std::min(kLanes, K - j0);
            V p = load_row<V>(row_ex + j0, n, A(0)) * rs;
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

template <typename T, typename I, typename A>
void backward_kernel(const Batch<T, I, A>& b, const Problem& p, double gD, double gG, double gI,
                     T* grad_real, T* grad_fake, T* grad_q) {
  using V = typename LaneOf<A>::V;
  const Layout lay(p);
  const GradScales<A> sc = grad_scales(p.params<A>(), A(gD), A(gG), A(gI), b.Br, b.Bq);
  const int64_t rows = std::max(b.Br, b.Bq);
  const int64_t per_chunk = chunk_rows(lay.W);
  const int64_t chunks = (rows + per_chunk - 1) / per_chunk;
  int64_t max_k = 1;
  for (int64_t k : p.cat_sizes) max_k = std::max(max_k, k);
  for_each_chunk(chunks, [&](auto next) {
    const int64_t Wt = std::max<int64_t>(lay.tile_width(), 1);
    Scratch<V> tile(Wt), gtile(Wt);
    Scratch<A> row_ex(max_k);
    for (int64_t c = next(); c < chunks; c = next())
      backward_rows(b, p, lay, sc, c * per_chunk, std::min(rows, (c + 1) * per_chunk), grad_real, grad_fake,
                    grad_q, tile.data(), gtile.data(), row_ex.data());
  });
}

}  // namespace
}  // namespace fastmi

// ---- tensors in, tensors out -----------------------------------------------------------
namespace fastmi {
namespace {

Problem make_problem(std::vector<int64_t> cat_sizes, int64_t nb, int64_t n, bool learned_std,
                     double fixed_logvar, double prior_entropy, double lambda_cat, double lambda_cont,
                     bool minimax, double real_label, bool sum_reduction) {
  Problem p;
  p.cat_sizes = std::move(cat_sizes);
  p.nb = nb;
  p.n = n;
  p.learned_std = learned_std;
  p.fixed_logvar = fixed_logvar;
  p.prior_entropy = prior_entropy;
  p.lambda_cat = lambda_cat;
  p.lambda_cont = lambda_cont;
  p.minimax = minimax;
  p.real_label = real_label;
  p.sum_reduction = sum_reduction;
  for (int64_t k : p.cat_sizes) TORCH_CHECK_VALUE(k >= 1, "fastmi: cat_sizes must be >= 1, got ", k);
  TORCH_CHECK_VALUE(nb >= 0 && n >= 0, "fastmi: n_bernoulli and n_continuous must be >= 0");
  return p;
}

// The checks every entry point runs before the kernels trust their pointers.
void check_inputs(const OptTensor& real, const OptTensor& fake, const Tensor& q, const OptTensor& cat,
                  const OptTensor& bern, const OptTensor& cont, const Problem& p) {
  fastmi::check_inputs("fastmi cpu", at::kCPU, real, fake, q, cat, bern, cont, {p.width(), p.m(), p.nb, p.n});
}

template <typename Fn>
void dispatch(const Tensor& q, const OptTensor& cat, Fn&& fn) {
  const bool int32 = present(cat) && cat->scalar_type() == at::kInt;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "fastmi_cpu", [&] {
    using T = scalar_t;
    using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
    if (int32) fn(T{}, int32_t{}, A{});
    else fn(T{}, int64_t{}, A{});
  });
}

template <typename T, typename I, typename A>
Batch<T, I, A> make_batch(const OptTensor& real, const OptTensor& fake, const Tensor& q, const OptTensor& cat,
                          const OptTensor& bern, const OptTensor& cont) {
  Batch<T, I, A> b;
  if (present(real)) { b.real = real->data_ptr<T>(); b.Br = real->numel(); }
  if (present(fake)) b.fake = fake->data_ptr<T>();
  b.q = q.data_ptr<T>();
  b.Bq = q.size(0);
  if (present(cat)) b.cat = cat->data_ptr<I>();
  if (present(bern)) b.bern = bern->data_ptr<A>();
  if (present(cont)) b.cont = cont->data_ptr<A>();
  return b;
}

void raise_code_error(const CodeError& err, const Problem& p) {
  if (err.cat_at != std::numeric_limits<int64_t>::max()) {
    const int64_t row = err.cat_at / p.m(), code = err.cat_at % p.m();
    TORCH_CHECK_VALUE(false, "infogan_loss: codes.categorical[", row, ", ", code, "] = ", err.cat_value,
                      " is outside [0, ", p.cat_sizes[code], ") (row ", row, ", categorical code ", code, ")");
  }
  if (err.bern_at != std::numeric_limits<int64_t>::max()) {
    const int64_t row = err.bern_at / p.nb, code = err.bern_at % p.nb;
    TORCH_CHECK_VALUE(false, "infogan_loss: codes.bernoulli[", row, ", ", code, "] = ", err.bern_value,
                      " is not 0 or 1 (row ", row, ", bernoulli code ", code, ")");
  }
}

// The forward's results, in double, before they become tensors.
struct ForwardValues {
  double losses[3];            // discriminator, generator, info
  std::vector<double> stats;   // jsd, mi_bernoulli, mi_continuous, mi_categorical...
  at::ScalarType dtype;        // of the output tensors: the accumulation dtype
};

ForwardValues run_forward(const OptTensor& real, const OptTensor& fake, const Tensor& q, const OptTensor& cat,
                          const OptTensor& bern, const OptTensor& cont, const Problem& p) {
  check_inputs(real, fake, q, cat, bern, cont, p);
  ForwardValues v;
  v.stats.resize(kMiCat0 + p.m());
  v.dtype = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  CodeError err;
  dispatch(q, cat, [&](auto t, auto i, auto a) {
    using T = decltype(t);
    using I = decltype(i);
    using A = decltype(a);
    forward_kernel(make_batch<T, I, A>(real, fake, q, cat, bern, cont), p, v.losses, v.stats.data(), &err);
  });
  raise_code_error(err, p);
  return v;
}

// A fresh CPU tensor holding values[0..n) (n = 0 gives a 0-d tensor). at::detail::empty_cpu
// skips the dispatcher, which costs more than the whole kernel at small batch sizes.
Tensor values_tensor(const double* values, int64_t n, bool scalar, at::ScalarType dtype) {
  Tensor t = scalar ? Tensor(at::detail::empty_cpu({}, dtype)) : Tensor(at::detail::empty_cpu({n}, dtype));
  if (dtype == at::kDouble) std::copy(values, values + n, t.data_ptr<double>());
  else std::transform(values, values + n, t.data_ptr<float>(), [](double x) { return static_cast<float>(x); });
  return t;
}

// Tests set this to fill fresh gradient buffers with NaN before the kernel writes them,
// so an element the kernel forgets to write shows up.
bool g_poison_outputs = false;

Tensor new_output(const Tensor& like) {
  Tensor t = at::detail::empty_generic(like.sizes(), &GradPool::get(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                       like.scalar_type(), std::nullopt);
  if (g_poison_outputs) t.fill_(std::numeric_limits<double>::quiet_NaN());
  return t;
}

// The upstream grad of one loss; absent counts as 0. Read in place: item() would go
// through the dispatcher three times per backward.
double upstream(const OptTensor& g) {
  if (!present(g)) return 0.0;
  TORCH_CHECK_VALUE(g->numel() == 1 && g->device().is_cpu(), "fastmi cpu: an upstream grad must be a CPU scalar");
  double value = 0.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, g->scalar_type(), "fastmi_upstream",
                                  [&] { value = static_cast<double>(*g->const_data_ptr<scalar_t>()); });
  return value;
}

std::vector<Tensor> run_backward(const OptTensor& gD, const OptTensor& gG, const OptTensor& gI,
                                 const OptTensor& real, const OptTensor& fake, const Tensor& q,
                                 const OptTensor& cat, const OptTensor& bern, const OptTensor& cont,
                                 const Problem& p) {
  check_inputs(real, fake, q, cat, bern, cont, p);
  Tensor empty = at::detail::empty_cpu({0}, q.scalar_type());
  Tensor grad_real = present(real) ? new_output(*real) : empty;
  Tensor grad_fake = present(fake) ? new_output(*fake) : empty;
  Tensor grad_q = new_output(q);
  const double up_d = upstream(gD), up_g = upstream(gG), up_i = upstream(gI);
  dispatch(q, cat, [&](auto t, auto i, auto a) {
    using T = decltype(t);
    using I = decltype(i);
    using A = decltype(a);
    backward_kernel(make_batch<T, I, A>(real, fake, q, cat, bern, cont), p, up_d, up_g, up_i,
                    present(real) ? grad_real.data_ptr<T>() : nullptr,
                    present(fake) ? grad_fake.data_ptr<T>() : nullptr, grad_q.data_ptr<T>());
  });
  return {grad_real, grad_fake, grad_q};
}

// ---- entry points ----------------------------------------------------------------------

#define FASTMI_PROBLEM_ARGS                                                                       \
  std::vector<int64_t> cat_sizes, int64_t nb, int64_t n, bool learned_std, double fixed_logvar,   \
      double prior_entropy, double lambda_cat, double lambda_cont, bool minimax, double real_label, \
      bool sum_reduction
#define FASTMI_PROBLEM                                                                                 \
  make_problem(std::move(cat_sizes), nb, n, learned_std, fixed_logvar, prior_entropy, lambda_cat,   \
               lambda_cont, minimax, real_label, sum_reduction)

// The custom op's forward: (discriminator, generator, info, stats).
std::vector<Tensor> forward_op(const OptTensor& real, const OptTensor& fake, const Tensor& q,
                               const OptTensor& cat, const OptTensor& bern, const OptTensor& cont,
                               FASTMI_PROBLEM_ARGS) {
  const ForwardValues v = run_forward(real, fake, q, cat, bern, cont, FASTMI_PROBLEM);
  return {values_tensor(&v.losses[0], 1, true, v.dtype), values_tensor(&v.losses[1], 1, true, v.dtype),
          values_tensor(&v.losses[2], 1, true, v.dtype),
          values_tensor(v.stats.data(), static_cast<int64_t>(v.stats.size()), false, v.dtype)};
}

// The custom op's backward: (grad_real, grad_fake, grad_q); an absent input's grad is [0].
std::vector<Tensor> backward_op(const OptTensor& gD, const OptTensor& gG, const OptTensor& gI,
                                const OptTensor& real, const OptTensor& fake, const Tensor& q,
                                const OptTensor& cat, const OptTensor& bern, const OptTensor& cont,
                                FASTMI_PROBLEM_ARGS) {
  return run_backward(gD, gG, gI, real, fake, q, cat, bern, cont, FASTMI_PROBLEM);
}

struct ProblemHolder : torch::CustomClassHolder {
  explicit ProblemHolder(Problem p) : problem(std::move(p)) {}
  Problem problem;
};

OptTensor opt(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

// The eager path: a C++ autograd node, so neither the forward nor the backward crosses
// into Python or the dispatcher.
struct FusedLoss : public torch::autograd::Function<FusedLoss> {
  // Absent inputs are passed as nullopt: autograd then treats them as non-inputs.
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const OptTensor& real,
                                                const OptTensor& fake, const Tensor& q, const OptTensor& cat,
                                                const OptTensor& bern, const OptTensor& cont, Problem p) {
    const ForwardValues v = run_forward(real, fake, q, cat, bern, cont, p);
    // Separate tensors, not views of one stats vector: a view costs a dispatcher round trip.
    auto scalar = [&](const double* x) { return values_tensor(x, 1, true, v.dtype); };
    Tensor jsd = scalar(&v.stats[kJsd]), mi_bern = scalar(&v.stats[kMiBern]), mi_cont = scalar(&v.stats[kMiCont]);
    Tensor mi_cat = values_tensor(v.stats.data() + kMiCat0, p.m(), false, v.dtype);
    ctx->set_materialize_grads(false);  // an unused loss costs no zero tensor: it counts as 0
    ctx->save_for_backward({real.value_or(Tensor()), fake.value_or(Tensor()), q, cat.value_or(Tensor()),
                            bern.value_or(Tensor()), cont.value_or(Tensor())});
    ctx->saved_data["problem"] = at::IValue::make_capsule(c10::make_intrusive<ProblemHolder>(std::move(p)));
    ctx->mark_non_differentiable({jsd, mi_cat, mi_bern, mi_cont});
    return {scalar(&v.losses[0]), scalar(&v.losses[1]), scalar(&v.losses[2]), jsd, mi_cat, mi_bern, mi_cont};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Problem& p =
        c10::static_intrusive_pointer_cast<ProblemHolder>(ctx->saved_data["problem"].toCapsule())->problem;
    auto g = run_backward(opt(grads[0]), opt(grads[1]), opt(grads[2]), opt(saved[0]), opt(saved[1]), saved[2],
                          opt(saved[3]), opt(saved[4]), opt(saved[5]), p);
    return {saved[0].defined() ? g[0] : Tensor(), saved[1].defined() ? g[1] : Tensor(), g[2],
            Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// (discriminator, generator, info, jsd_bound, mi_categorical, mi_bernoulli, mi_continuous)
std::vector<Tensor> loss(const OptTensor& real, const OptTensor& fake, const Tensor& q, const OptTensor& cat,
                         const OptTensor& bern, const OptTensor& cont, FASTMI_PROBLEM_ARGS) {
  return FusedLoss::apply(real, fake, q, cat, bern, cont, FASTMI_PROBLEM);
}

// The kernel's float exp / log / log1p applied to every element of a float32 tensor, a
// vector of lanes at a time, exactly as the kernels run them: for the accuracy tests.
Tensor vector_math(const std::string& fn, const Tensor& x) {
  TORCH_CHECK_VALUE(x.scalar_type() == at::kFloat && x.device().is_cpu(), "vector_math: x must be a float32 CPU tensor");
  const Tensor in = x.contiguous();
  Tensor out = at::empty_like(in);
  const float* src = in.const_data_ptr<float>();
  float* dst = out.data_ptr<float>();
  using L = Lane<f32xL>;
  f32xL (*apply)(f32xL) = nullptr;
  if (fn == "exp") apply = [](f32xL v) { return L::exp(v); };
  else if (fn == "exp_nonpos") apply = [](f32xL v) { return L::exp_nonpos(v); };
  else if (fn == "log") apply = [](f32xL v) { return L::log(v); };
  else if (fn == "log1p") apply = [](f32xL v) { return L::log1p(v); };
  TORCH_CHECK_VALUE(apply != nullptr, "vector_math: fn must be exp, exp_nonpos, log or log1p, got ", fn);
  for (int64_t i = 0; i < in.numel(); i += kLanes) {
    const int64_t n = std::min<int64_t>(kLanes, in.numel() - i);
    store_row(dst + i, apply(load_row<f32xL>(src + i, n, 1.0f)), n);
  }
  return out;
}

}  // namespace
}  // namespace fastmi

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastmi fused CPU kernel (csrc/infogan/cpu/infogan_cpu.cpp)";
  m.def("forward_op", &fastmi::forward_op, "(D, G, I, stats) of one batch");
  m.def("backward_op", &fastmi::backward_op, "(grad_real, grad_fake, grad_q) of one batch");
  m.def("loss", &fastmi::loss, "eager forward with a C++ autograd node");
  m.def("set_poison_outputs", [](bool on) { fastmi::g_poison_outputs = on; },
        "fill new gradient buffers with NaN before the kernels write them (for tests)");
  m.def("cached_grad_bytes", [] { return fastmi::GradPool::get().cached_bytes(); },
        "bytes of freed gradient buffers the pool keeps for the next backward");
  m.def("empty_grad_pool", [] { fastmi::GradPool::get().empty(); }, "frees the cached gradient buffers");
  m.def("set_grad_pool", [](bool on) { fastmi::GradPool::get().set_enabled(on); },
        "on (the default): large gradient buffers come from the pool; off: from torch's CPU allocator");
  m.def("vector_math", &fastmi::vector_math, "the kernels' float exp/exp_nonpos/log/log1p over a tensor (tests)");
  m.def("set_lane_max_k", [](int64_t k) { fastmi::g_lane_max_k = k; },
        "categorical codes with K up to this use the row-lane layout, larger ones the in-row one");
}
