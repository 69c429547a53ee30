// Hopper quantization kernels: the C++ API the model code calls.
//
// Plain C++ (no CUDA headers): device buffers are raw pointers, the stream is CUDA's opaque
// cudaStream_t. Every kernel is a fast arrangement of the header-only format core
// (src/format/), so its output is bit-identical to the CPU reference nvfp4::quantize()
// (tests/cuda/test_quantize_cuda.cu checks this on fresh random inputs and the golden file).
// Kernels take the quantizer's options (nvfp4::QuantizeOptions, the one config type of every
// backend), never a recipe (architecture.md, principle 3).
#pragma once

#include <cstdint>

#include "nvfp4/dtype.hpp"
#include "nvfp4/quantize.hpp"

struct CUstream_st;

namespace nvfp4::cuda {

using Stream = CUstream_st*;  // cudaStream_t; nullptr is the default stream

// One quantized copy in device memory (caller-allocated; device_copy_bytes() says how much).
// The fields a format does not use stay null.
//   codes      FP4: (rows, cols/2) bytes, element 2j in the low nibble; FP8: (rows, cols) bytes
//   scales     FP4 block scales: NVFP4 (rows, cols/16) E4M3 row-major, or with
//              options.swizzled_scales the 128x4 layout of swizzled_scale_bytes(rows, cols/16)
//              bytes (padding written as 0); MXFP4 (rows, cols/32) E8M0
//   scale_inv  FP8 decode factors: [1] per tensor; per 1x128 block (rows, ceil(cols/128)); per
//              128x128 tile (ceil(rows/128), ceil(cols/128)) — for the column-wise copy x^T, the
//              transpose of the row-wise copy's tiles (a tile maps onto itself)
//   amax       one FP32: max |input| of this copy (post-RHT for an RHT copy). Written by
//              quantize() (NVFP4, FP8 per tensor; optional for FP8 blocks), read with
//              AmaxInput::given; unused by MXFP4.
struct DeviceCopy {
  uint8_t* codes = nullptr;
  uint8_t* scales = nullptr;
  float* scale_inv = nullptr;
  float* amax = nullptr;
};

// Sizes of the buffers of a (rows, cols) copy under options (block resolved or default).
struct DeviceCopyBytes {
  int64_t codes = 0, scales = 0, scale_inv = 0, amax = 0;
};
DeviceCopyBytes device_copy_bytes(const QuantizeOptions& options, int64_t rows, int64_t cols);

// Device status words the kernels set instead of stopping: the caller checks them when it
// next synchronizes, so detecting NaN/Inf costs no extra pass over the data.
struct DeviceStatus {
  uint32_t* nonfinite_count = nullptr;  // device counter: elements that were NaN or Inf
};

// Where the per-tensor amax of each copy comes from: found by quantize() (a pass over x
// before the quantizing pass), or given — already in the copy's amax (a producer kernel or a
// previous call wrote it), so x is read once. Given is for NVFP4 and per-tensor FP8.
enum class AmaxInput : uint8_t { compute, given };

// THE quantization entry on CUDA: x (M, K) row-major, BF16 or F32, to options.format as
// options say (the kernels' own dispatch on format and block):
//   nvfp4      block 1x16 or 16x16; rht: the 16-point RHT on the column-wise copy (inside the
//              kernel); rounding; sr_key (the column-wise copy draws with role | 128);
//              swizzled_scales. M % 16 == 0, K % 16 == 0.
//   mxfp4, mxfp4-ocp   block 1x32; rounding, sr_key; rht: the 32-point RHT of the column-wise
//              copy, a separate pass into `scratch` (quantize_scratch_bytes) — no row-wise copy
//              in the same call then. K % 32 == 0 for a row-wise copy, M % 32 == 0 for a
//              column-wise one.
//   fp8-e4m3, fp8-e5m2 block tensor (current scaling: scale = fp8_max / amax, 1 for an all-
//              zero tensor; both copies share amax and scale) or 1x128 / 128x128 (DeepSeek-V3
//              style, edge blocks may be partial). M % 16 == 0, K % 16 == 0.
// row / col: the row-wise copy (blocks along K) and/or the column-wise copy of x^T (blocks
// along M); either may be null to skip it (options.rowwise / columnwise are not read here). x
// must be 16-byte aligned; codes 8-byte (FP4) or 16-byte (FP8) aligned (cudaMalloc pointers
// are). Asynchronous on `stream`; bit-identical to nvfp4::quantize(). Throws nvfp4::Error for
// bad arguments or a failed launch. Non-finite inputs are counted into status.nonfinite_count
// (when given), not stopped: check it after synchronizing; such a tensor's outputs are not
// meaningful.
void quantize(const void* x, DType dtype, int64_t M, int64_t K, const QuantizeOptions& options, const DeviceCopy* row,
              const DeviceCopy* col, DeviceStatus status, Stream stream, AmaxInput amax = AmaxInput::compute,
              void* scratch = nullptr);
// Bytes of scratch quantize() needs for these options and shape (0: none).
int64_t quantize_scratch_bytes(const QuantizeOptions& options, DType dtype, int64_t M, int64_t K);

// One copy (rows, cols) back to BF16 or F32, row-major, written to `out` (16-byte aligned).
// Bit-exact with nvfp4::dequantize() for F32 output; BF16 output is its RNE rounding.
//   NVFP4, apply_tensor_scale = false: codes x E4M3 block scale only — exact in BF16; the FP32
//          factor amax / 2688 is left to the caller (a GEMM applies it in alpha). true: times
//          that factor, read from copy.amax on the device (no host synchronization).
//          options.swizzled_scales: the scales are in the 128x4 layout.
//   MXFP4: codes x E8M0 scale (exact in BF16).
//   FP8:   codes x scale_inv, per tensor or per block (options.block), in quantize()'s layout.
void dequantize(const DeviceCopy& copy, int64_t rows, int64_t cols, const QuantizeOptions& options,
                bool apply_tensor_scale, void* out, DType out_dtype, Stream stream);

// The NVFP4 amax pass alone: max |x| into row_amax, and max |RHT(x^T)| into col_amax when
// options.rht (else col_amax gets max |x| too). Either pointer may be null.
void nvfp4_amax(const void* x, DType dtype, int64_t M, int64_t K, const QuantizeOptions& options, float* row_amax,
                float* col_amax, DeviceStatus status, Stream stream);

// max |x| of several tensors in one launch: for each task, folded into *amax (atomicMax on
// the bits: zero it first). A model's weights are many small tensors whose amax pass is launch-
// bound one by one. dtype BF16 or F32; each x 16-byte aligned, n a multiple of 8. NaN does not
// raise an amax (a quantizer given it counts non-finite values).
struct AmaxTask {
  const void* x = nullptr;
  int64_t n = 0;
  float* amax = nullptr;
};
void multi_amax(const AmaxTask* tasks, int count, DType dtype, Stream stream);

// Per-tensor FP8 with the amax given (AmaxInput::given) for several tensors in a few launches
// (many small tensors, e.g. a model's weights, are launch-bound one call each). Every task asks
// for the same copies (row, column or both). Non-finite inputs are counted into the task's
// nonfinite_count (when given).
struct Fp8Task {
  const void* x = nullptr;
  int64_t M = 0, K = 0;
  Format format = Format::fp8_e4m3;
  DeviceCopy row, col;  // codes == nullptr: copy not requested
  uint32_t* nonfinite_count = nullptr;
};
void quantize_fp8_multi(const Fp8Task* tasks, int count, DType dtype, Stream stream);

// The 32-point RHT that MXFP4's column-wise copy takes under RHT (the paper's MXFP4 variant):
// out (M, K) = x with each column's 32-row segments transformed (fmt::rht32, kRht32SignMask)
// and rounded to dtype (BF16 or F32, as x). quantize() runs it into its scratch.
// M % 32 == 0; out must not alias x.
void rht32_columns(const void* x, DType dtype, int64_t M, int64_t K, void* out, Stream stream);

}  // namespace nvfp4::cuda
