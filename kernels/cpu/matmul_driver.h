// The blocking shared by every ISA's matrix product: tokens in blocks that stay in L2, weight rows
// in register-tile steps, tokens in register-tile columns. Include it inside an ISA's
// `#pragma GCC target` region after defining `Kernel`, a type with
//   template <int R, int C> static void Tile(const XT* x, const bf16_t* w, int64_t k_dim,
//                                            int64_t n_rows, float* y, const bf16_t* bias);
// computing an R-row × C-token register tile. Nothing here is ISA-specific.
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels/backend.h"

namespace phimoe::kernels::cpu::internal {

// Kernel::Tile<R, c> for a run-time c in [1, C].
template <typename Kernel, int R, int C, typename XT>
inline void TileUpTo(int c, const XT* x, const bf16_t* w, int64_t k_dim, int64_t n_rows, float* y,
                     const bf16_t* bias) {
  if constexpr (C > 1) {
    if (c < C) {
      TileUpTo<Kernel, R, C - 1>(c, x, w, k_dim, n_rows, y, bias);
      return;
    }
  }
  Kernel::template Tile<R, C>(x, w, k_dim, n_rows, y, bias);
}

// kRows: rows per tile; kFewRows: rows per tile when a token block has fewer than kCols tokens
// (a matrix-vector product wants more independent rows in flight); kCols: tokens per tile.
template <typename Kernel, int kRows, int kFewRows, int kCols, int64_t kTokenBlock, typename XT>
inline void DriveMatMulBlock(const XT* x, const Bf16Matrix& w, const bf16_t* bias, float* y,
                             int64_t t0, int64_t t1, int64_t r0, int64_t r1) {
  const int64_t k_dim = w.cols, n_rows = w.rows;
  for (int64_t tb = t0; tb < t1; tb += kTokenBlock) {
    const int64_t te = std::min(t1, tb + kTokenBlock);
    const bool few_tokens = (te - tb) < kCols;
    const int64_t row_step = few_tokens ? kFewRows : kRows;
    int64_t r = r0;
    for (; r + row_step <= r1; r += row_step) {
      for (int64_t t = tb; t < te; t += kCols) {
        const int c = static_cast<int>(std::min<int64_t>(kCols, te - t));
        const bf16_t* br = bias ? bias + r : nullptr;
        if (few_tokens) {
          TileUpTo<Kernel, kFewRows, kCols>(c, x + t * k_dim, w.data + r * k_dim, k_dim, n_rows,
                                          y + t * n_rows + r, br);
        } else {
          TileUpTo<Kernel, kRows, kCols>(c, x + t * k_dim, w.data + r * k_dim, k_dim, n_rows,
                                       y + t * n_rows + r, br);
        }
      }
    }
    for (; r < r1; ++r) {
      for (int64_t t = tb; t < te; t += kCols) {
        const int c = static_cast<int>(std::min<int64_t>(kCols, te - t));
        TileUpTo<Kernel, 1, kCols>(c, x + t * k_dim, w.data + r * k_dim, k_dim, n_rows,
                                 y + t * n_rows + r, bias ? bias + r : nullptr);
      }
    }
  }
}

}  // namespace phimoe::kernels::cpu::internal
