// CUDA token embedding forward and backward (include/nvfp4/cuda_ops.hpp; CPU twin:
// src/kernels/cpu/embedding.cpp).
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <cub/device/device_radix_sort.cuh>

#include "kernels/cpu/ops.hpp"  // cpu::kEncoderChunk: the order of the embedding gradient's additions

#include "kernels/cuda/ops_common.cuh"

namespace nvfp4::cuda {

using namespace ops_detail;

namespace {

// ---- token embedding -----------------------------------------------------------------------------

template <bool kAligned>
__global__ void encoder_forward_kernel(uint16_t* __restrict__ out, const int32_t* __restrict__ tokens,
                                       const uint16_t* __restrict__ wte, int64_t N, int64_t C, int64_t V,
                                       uint32_t* status) {
  dependent_wait();  // launched with launch_dependent (ops_common.cuh)
  dependent_trigger();
  const int64_t chunks_per_row = (C + kVec - 1) / kVec;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < N * chunks_per_row;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = idx / chunks_per_row, c = (idx % chunks_per_row) * kVec;
    const int32_t tok = tokens[n];
    float v[8] = {};
    if (tok >= 0 && tok < V) load8<kAligned>(wte + static_cast<int64_t>(tok) * C, c, C, v);
    else if (status) atomicOr(status, kStatusBadToken);
    store8<kAligned>(out + n * C, c, C, v);
  }
}

// Sort keys: the token, or V for a token outside [0, V) (sorted last, skipped).
__global__ void encoder_keys_kernel(uint32_t* __restrict__ keys, int32_t* __restrict__ positions,
                                    const int32_t* __restrict__ tokens, int64_t N, int64_t V, uint32_t* status) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t tok = tokens[i];
    const bool ok = tok >= 0 && tok < V;
    if (!ok && status) atomicOr(status, kStatusBadToken);
    keys[i] = ok ? static_cast<uint32_t>(tok) : static_cast<uint32_t>(V);
    positions[i] = static_cast<int32_t>(i);
  }
}

// The embedding gradient in cpu::encoder_backward's order (same bits): the (token, position)
// pairs sorted by token, stably; the sorted sequence cut into chunks of kEncoderChunk; in a
// chunk, each token's rows summed from zero in position order (a piece); each token's pieces
// added into its row in order. A token's positions are one run of the sorted keys; most runs sit
// inside one chunk, and a long one (byte-level text puts a large share of its tokens on a few
// characters) spans many, which the two kernels below take in parallel:
//   pieces  grid (chunks, channel blocks): the pieces of one chunk. A run inside the chunk goes
//           straight into its row (no other block touches that token); the piece that starts a
//           run continuing past the chunk goes to run_head[chunk], a piece continuing one from
//           the chunk before to run_tail[chunk].
//   chains  grid (chunks, channel blocks): the chunk whose last piece starts a continuing run
//           adds its row + run_head + the following chunks' run_tail pieces, in order.
// (Summing each run in one serial chain, even with 32 rows fetched ahead, took 2.6 ms of an 82 ms
// step on docs/results.md's model and corpus; these two take 0.23 + 0.03 ms there, H100.)
constexpr int kEncThreads = 128;
constexpr int kChunk = static_cast<int>(cpu::kEncoderChunk);

// Whether the piece of the chunk starting at sorted index chunk_start that begins at sorted
// index a is the first of its token's run: it is, unless it opens the chunk and the chunk
// before ends with the same token.
__device__ __forceinline__ bool piece_begins_run(const uint32_t* keys, int64_t a, int64_t chunk_start) {
  return a > chunk_start || chunk_start == 0 || keys[chunk_start - 1] != keys[a];
}

__global__ void __launch_bounds__(kEncThreads) encoder_pieces_kernel(float* __restrict__ dwte,
                                                                     float* __restrict__ run_head,
                                                                     float* __restrict__ run_tail,
                                                                     const uint16_t* __restrict__ dout,
                                                                     const uint32_t* __restrict__ keys,
                                                                     const int32_t* __restrict__ positions,
                                                                     int64_t N, int64_t C, int64_t V) {
  __shared__ uint32_t skey[kChunk];
  __shared__ int32_t spos[kChunk];
  const int64_t g = blockIdx.x, start = g * kChunk, end = min(N, start + kChunk);
  const int n = static_cast<int>(end - start);
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    skey[j] = keys[start + j];
    spos[j] = positions[start + j];
  }
  __syncthreads();
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kEncThreads + threadIdx.x;
  if (c >= C) return;
  float v[kChunk];  // every row's value first: the additions below wait on no load
#pragma unroll
  for (int j = 0; j < kChunk; ++j) v[j] = j < n ? bf16_to_f32(dout[static_cast<int64_t>(spos[j]) * C + c]) : 0.0f;
  float acc = 0.0f;
  int a = 0;  // the current piece's first index in the chunk
#pragma unroll
  for (int j = 0; j <= kChunk; ++j) {
    if (j > n) break;
    if (j > a && (j == n || skey[j] != skey[a])) {  // piece [a, j) ends
      const uint32_t tok = skey[a];
      if (tok < V) {
        const bool begins = piece_begins_run(keys, start + a, start);
        const bool ends = j < n || end == N || keys[end] != tok;
        if (begins && ends) dwte[static_cast<int64_t>(tok) * C + c] += acc;
        else if (begins) run_head[g * C + c] = acc;
        else run_tail[g * C + c] = acc;
      }
      acc = 0.0f;
      a = j;
    }
    if (j < n) acc += v[j];
  }
}

__global__ void __launch_bounds__(kEncThreads) encoder_chains_kernel(float* __restrict__ dwte,
                                                                     const float* __restrict__ run_head,
                                                                     const float* __restrict__ run_tail,
                                                                     const uint32_t* __restrict__ keys, int64_t N,
                                                                     int64_t C, int64_t V) {
  const int64_t g = blockIdx.x, start = g * kChunk, end = min(N, start + kChunk);
  const uint32_t tok = keys[end - 1];  // the chunk's last piece
  if (tok >= V || end == N || keys[end] != tok) return;  // it does not continue past the chunk
  // It opens the chunk when the whole chunk is that token; then it may itself continue a run,
  // whose chain starts in an earlier chunk.
  if (keys[start] == tok && !piece_begins_run(keys, start, start)) return;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kEncThreads + threadIdx.x;
  if (c >= C) return;
  // The run's end (binary search in the sorted keys), then its chunks' pieces in order.
  int64_t lo = end, hi = N;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (keys[mid] == tok) lo = mid + 1;
    else hi = mid;
  }
  const int64_t last_chunk = (lo - 1) / kChunk;
  float* row = dwte + static_cast<int64_t>(tok) * C + c;
  float acc = *row + run_head[g * C + c];
  constexpr int kAhead = 16;
  for (int64_t h = g + 1; h <= last_chunk; h += kAhead) {
    float t[kAhead];
#pragma unroll
    for (int u = 0; u < kAhead; ++u) t[u] = h + u <= last_chunk ? run_tail[(h + u) * C + c] : 0.0f;
#pragma unroll
    for (int u = 0; u < kAhead; ++u)
      if (h + u <= last_chunk) acc += t[u];
  }
  *row = acc;
}

// Bits that hold every key 0..V of encoder_keys_kernel.
int key_bits(int64_t V) {
  int bits = 1;
  while (bits < 32 && (int64_t{1} << bits) <= V) ++bits;
  return bits;
}

size_t align256(size_t bytes) { return (bytes + 255) & ~size_t{255}; }

size_t cub_sort_bytes(int64_t N, int64_t V) {
  size_t bytes = 0;
  check(cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const uint32_t*>(nullptr),
                                        static_cast<uint32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                        static_cast<int32_t*>(nullptr), static_cast<int>(N), 0, key_bits(V)),
        "encoder_backward (sort size)");
  return bytes;
}

}  // namespace

// ---- token embedding -----------------------------------------------------------------------------

void encoder_forward(uint16_t* out, const int32_t* tokens, const uint16_t* wte, int64_t B, int64_t T, int64_t C,
                     int64_t V, uint32_t* status, Stream stream) {
  constexpr const char* op = "encoder_forward";
  require_nonnegative(op, {{"B", B}, {"T", T}, {"C", C}, {"V", V}});
  const int64_t N = B * T;
  if (N == 0 || C == 0) return;
  const bool aligned = C % kVec == 0 && aligned16(out) && aligned16(wte);
  NVFP4_LAUNCH_ALIGNED_DEPENDENT(aligned, encoder_forward_kernel, grid_for(N * ((C + kVec - 1) / kVec)), kThreads, 0,
                                 stream, out, tokens, wte, N, C, V, status);
  check_launch(op);
}

size_t encoder_backward_scratch_bytes(int64_t B, int64_t T, int64_t C, int64_t V) {
  const int64_t N = B * T, chunks = (N + kChunk - 1) / kChunk;
  return 4 * align256(sizeof(int32_t) * static_cast<size_t>(N)) + align256(cub_sort_bytes(N, V)) +
         2 * align256(sizeof(float) * static_cast<size_t>(chunks * C));
}

void encoder_backward(float* dwte, const uint16_t* dout, const int32_t* tokens, int64_t B, int64_t T, int64_t C,
                      int64_t V, void* scratch, uint32_t* status, Stream stream) {
  constexpr const char* op = "encoder_backward";
  require_nonnegative(op, {{"B", B}, {"T", T}, {"C", C}, {"V", V}});
  const int64_t N = B * T;
  if (N == 0 || C == 0) return;
  require(N <= INT_MAX && V < (int64_t{1} << 31), op, "B*T or V does not fit the 32-bit sort");
  require_ptr(scratch, op, "scratch (encoder_backward_scratch_bytes)");
  const int64_t channel_blocks = (C + kEncThreads - 1) / kEncThreads;
  const int64_t chunks = (N + kChunk - 1) / kChunk;
  require(channel_blocks <= 65535, op, "C too large for the launch grid");
  char* base = static_cast<char*>(scratch);
  const size_t seg = align256(sizeof(int32_t) * static_cast<size_t>(N));
  uint32_t* keys_in = reinterpret_cast<uint32_t*>(base);
  uint32_t* keys_out = reinterpret_cast<uint32_t*>(base + seg);
  int32_t* pos_in = reinterpret_cast<int32_t*>(base + 2 * seg);
  int32_t* pos_out = reinterpret_cast<int32_t*>(base + 3 * seg);
  void* temp = base + 4 * seg;
  size_t temp_bytes = cub_sort_bytes(N, V);
  float* run_head = reinterpret_cast<float*>(base + 4 * seg + align256(temp_bytes));
  float* run_tail = run_head + align256(sizeof(float) * static_cast<size_t>(chunks * C)) / sizeof(float);

  encoder_keys_kernel<<<grid_for(N), kThreads, 0, stream>>>(keys_in, pos_in, tokens, N, V, status);
  check_launch(op);
  // NOTE: LSD radix sort is stable: equal tokens keep their positions in increasing order.
  check(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, pos_in, pos_out, static_cast<int>(N), 0,
                                        key_bits(V), stream),
        "encoder_backward (sort)");
  const dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>(channel_blocks));
  encoder_pieces_kernel<<<grid, kEncThreads, 0, stream>>>(dwte, run_head, run_tail, dout, keys_out, pos_out, N, C, V);
  check_launch(op);
  encoder_chains_kernel<<<grid, kEncThreads, 0, stream>>>(dwte, run_head, run_tail, keys_out, N, C, V);
  check_launch(op);
}

}  // namespace nvfp4::cuda
