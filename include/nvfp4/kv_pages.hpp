// The paged layout of an inference KV cache (vLLM's): a pool of blocks (blocks, block_size, NKV, HS)
// per layer for K and one for V, and a block table (slots, per_seq) int32, per_seq =
// ceil(max_ctx / block_size): position j of slot s lives in block table[s * per_seq + j /
// block_size], row j % block_size; an entry outside [0, blocks) (-1) means no block. table ==
// nullptr: the contiguous layout (slots, max_ctx, NKV, HS). The CPU ops take host pointers, the CUDA
// ops device pointers (src/kernels/cpu/ops.hpp and nvfp4/cuda_ops.hpp, section "inference").
#pragma once

#include <cstdint>

namespace nvfp4 {

struct KvPages {
  const int32_t* table = nullptr;
  int64_t block_size = 0;
  int64_t blocks = 0;
};

}  // namespace nvfp4
