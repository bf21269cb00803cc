// fastmi critic_bound CPU kernels: the tiles of a call and the order in which tasks
// visit them (tiles.h says why that order makes the result bit-identical for any thread
// count). No torch headers.

#include "kernels.h"

namespace fastmi {
namespace critic {

Tiles plan_tiles(int64_t B, int64_t N, int64_t tile) {
  Tiles t;
  if (tile > 0) {
    t.rows = t.cols = tile;
  } else {
    // rows: the largest power of two <= B / 4 in [8, kMaxTile], so that there are at
    // least 4 row tiles when B >= 32 (tasks that depend on each other are R - 1 apart)
    int64_t rows = 8;
    while (rows * 2 <= kMaxTile && rows * 2 * 4 <= B) rows *= 2;
    const int64_t R = (B + rows - 1) / rows;
    // cols: as many as rows, wider while N keeps at least R column tiles (the schedule
    // needs C >= R), so that a small B against a large N still makes large GEMMs
    int64_t cols = rows;
    while (cols * 2 <= kMaxTile && (N + cols * 2 - 1) / (cols * 2) >= R) cols *= 2;
    t.rows = rows;
    t.cols = cols;
  }
  t.R = (B + t.rows - 1) / t.rows;
  t.C = (N + t.cols - 1) / t.cols;
  return t;
}

// Row tile r at step t visits column tile (r + t) mod C. previous_visitor: the task that
// visited that column tile just before, as (row tile, step), or row tile -1 for its first
// visitor. Derivation: row tile r' visits column c at step (c - r') mod C. For r < R - 1
// the step t - 1 (the latest step before t) belongs to row tile r + 1, when t >= 1; at
// t = 0 nobody came before. For r = R - 1 every row tile r' < r visits c at step
// (t + r - r') mod C, which is below t only when it wraps, and is largest for r' = 0:
// step r + t - C, when that is >= 0. (tests/test_critic_cpu.py checks this against a
// brute-force ordering.)
Visitor previous_visitor(const Tiles& tl, int64_t r, int64_t t) {
  if (r + 1 < tl.R) return t >= 1 ? Visitor{r + 1, t - 1} : Visitor{-1, -1};
  const int64_t t0 = r + t - tl.C;
  return t0 >= 0 ? Visitor{0, t0} : Visitor{-1, -1};
}

}  // namespace critic
}  // namespace fastmi
