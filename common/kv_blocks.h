// The paged-KV block rule, written once: a sequence of n positions holds ceil(n / block_size)
// blocks. The attention engine allocates by it and the gateway's scheduler budgets by it; they
// must agree, or the scheduler plans steps the node refuses (or leaves blocks unused).
#pragma once

#include <cstdint>

namespace phimoe {

// Blocks that `n_tokens` positions occupy (0 for 0). block_size must be positive.
constexpr int64_t BlocksForTokens(int64_t n_tokens, int64_t block_size) {
  return n_tokens <= 0 ? 0 : (n_tokens + block_size - 1) / block_size;
}

}  // namespace phimoe
