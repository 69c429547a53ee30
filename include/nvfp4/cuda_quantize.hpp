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

// One quantized copy in device memory (caller-allocated).
//   codes  (rows, cols/2) bytes, element 2j in the low nibble
//   scales (rows, cols/16) E4M3, row-major; or, with swizzled_scales, the 128x4 layout of
//          swizzled_scale_bytes(rows, cols/16) bytes (padding written as 0)
//   amax   one FP32: max |input| of this copy (post-RHT for an RHT copy)
struct DeviceNvfp4Copy {
  uint8_t* codes = nullptr;
  uint8_t* scales = nullptr;
  float* amax = nullptr;
};

// Device status words the kernels set instead of stopping: the caller checks them when it
// next synchronizes, so detecting NaN/Inf costs no extra pass over the data.
struct DeviceStatus {
  uint32_t* nonfinite_count = nullptr;  // device counter: elements that were NaN or Inf
};

// Quantize x (M, K) row-major, BF16 or F32, to NVFP4 as options say (format nvfp4; block 1x16
// or 16x16; rht: the 16-point RHT on the column-wise copy; rounding; sr_key, the column-wise
// copy drawing with role | 128; swizzled_scales): the row-wise copy (blocks along K) and/or the
// column-wise copy of x^T (blocks along M), each with its own amax, computed on the device. row
// or col may be null to skip that copy (options.rowwise / columnwise are not read here).
// Shapes: K % 16 == 0 and M % 16 == 0 (the kernels read 16-row chunks). x must be 16-byte aligned, codes 8-byte aligned (cudaMalloc
// pointers are). Asynchronous on `stream`; throws nvfp4::Error for bad arguments or a failed
// launch. Non-finite inputs are counted into status.nonfinite_count (when given), not stopped:
// check it after synchronizing; the outputs for such a tensor are not meaningful.
void quantize_nvfp4(const void* x, DType dtype, int64_t M, int64_t K, const QuantizeOptions& options,
                    const DeviceNvfp4Copy* row, const DeviceNvfp4Copy* col, DeviceStatus status, Stream stream);

// Same, with the per-tensor amax of each copy already computed (by a producer kernel, or a
// previous call): reads x once. amax pointers of row/col are inputs here.
void quantize_nvfp4_given_amax(const void* x, DType dtype, int64_t M, int64_t K, const QuantizeOptions& options,
                               const DeviceNvfp4Copy* row, const DeviceNvfp4Copy* col, DeviceStatus status,
                               Stream stream);

// The amax pass alone: max |x| into row_amax, and max |RHT(x^T)| into col_amax when
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

// ---- MXFP4: E2M1 codes + an E8M0 scale per 32 values, no tensor scale: one pass ---------------
//
// format: Format::mxfp4 (exponent rounded up, TE) or Format::mxfp4_ocp. Outputs reuse
// DeviceNvfp4Copy: codes (rows, cols/2), scales (rows, cols/32) E8M0 bytes; amax is unused.
// Shapes: K % 32 == 0 for the row-wise copy, M % 32 == 0 for the column-wise copy, both % 16.
void quantize_mxfp4(const void* x, DType dtype, int64_t M, int64_t K, Format format, bool stochastic, SrKey sr_key,
                    const DeviceNvfp4Copy* row, const DeviceNvfp4Copy* col, DeviceStatus status, Stream stream);

// The 32-point RHT that MXFP4's column-wise copy takes under RHT (the paper's MXFP4 variant):
// out (M, K) = x with each column's 32-row segments transformed (fmt::rht32, kRht32SignMask)
// and rounded to dtype (BF16 or F32, as x). Quantizing out's column-wise copy with
// quantize_mxfp4 gives the bits nvfp4::quantize() gives with options.rht for MXFP4.
// M % 32 == 0; out must not alias x.
void rht32_columns(const void* x, DType dtype, int64_t M, int64_t K, void* out, Stream stream);

// ---- The FP4 formats through one entry each way (the kernels' dispatch on options.format) ----
//
// quantize_fp4: options.format nvfp4 (quantize_nvfp4, its 16-point RHT inside the kernel call)
// or mxfp4 / mxfp4-ocp (quantize_mxfp4; under options.rht the 32-point RHT is a separate pass
// into rht_scratch — M x K elements of dtype — and only a column-wise copy can be made then).
// rht_is_separate_pass(options) says whether rht_scratch is needed.
bool rht_is_separate_pass(const QuantizeOptions& options);
void quantize_fp4(const void* x, DType dtype, int64_t M, int64_t K, const QuantizeOptions& options,
                  const DeviceNvfp4Copy* row, const DeviceNvfp4Copy* col, DeviceStatus status, Stream stream,
                  void* rht_scratch = nullptr);
// dequantize_fp4: dequantize_nvfp4 (row-major scales) or dequantize_mxfp4 by format;
// apply_tensor_scale is NVFP4's (MXFP4 has no tensor scale).
void dequantize_fp4(const DeviceNvfp4Copy& copy, int64_t rows, int64_t cols, Format format, bool apply_tensor_scale,
                    void* out, DType out_dtype, Stream stream);

// ---- FP8 with per-tensor current scaling ----------------------------------------------------
//
// codes = fp8_satfinite(x * scale), scale = fp8_max / amax (1 for an all-zero tensor); the
// stored decode factor is scale_inv = 1 / scale. The column-wise copy holds x^T (same amax,
// same scale), so a TN GEMM can take either operand.
struct DeviceFp8Copy {
  uint8_t* codes = nullptr;    // (rows, cols) bytes, 16-byte aligned
  float* scale_inv = nullptr;  // [1] per tensor; per block: see quantize_fp8_blockwise
  float* amax = nullptr;       // [1]: output of quantize_fp8, input of quantize_fp8_given_amax;
                               // optional output (max |x|) of quantize_fp8_blockwise
};

// format: Format::fp8_e4m3 or Format::fp8_e5m2. Shapes: M % 16 == 0, K % 16 == 0.
void quantize_fp8(const void* x, DType dtype, int64_t M, int64_t K, Format format, const DeviceFp8Copy* row,
                  const DeviceFp8Copy* col, DeviceStatus status, Stream stream);
void quantize_fp8_given_amax(const void* x, DType dtype, int64_t M, int64_t K, Format format,
                             const DeviceFp8Copy* row, const DeviceFp8Copy* col, DeviceStatus status,
                             Stream stream);

// quantize_fp8_given_amax for several tensors in a few launches (many small tensors, e.g. a
// model's weights, are launch-bound one call each). Every task asks for the same copies (row,
// column or both); each copy's amax is an input. Non-finite inputs are counted into the task's
// nonfinite_count (when given).
struct Fp8Task {
  const void* x = nullptr;
  int64_t M = 0, K = 0;
  Format format = Format::fp8_e4m3;
  DeviceFp8Copy row, col;  // codes == nullptr: copy not requested
  uint32_t* nonfinite_count = nullptr;
};
void quantize_fp8_multi(const Fp8Task* tasks, int count, DType dtype, Stream stream);

// ---- FP8 with block scales (DeepSeek-V3 style): one pass, no tensor amax needed ------------
//
// block 1x128 (activations, gradients): a scale per 128 consecutive elements of each row of
// the copy; scale_inv is (M, ceil(K/128)) for the row-wise copy, (K, ceil(M/128)) for the
// column-wise copy x^T (its blocks run along M). block 128x128 (weights): scale_inv is
// (ceil(M/128), ceil(K/128)) and, for x^T, its transpose (a tile maps onto itself). Edge blocks
// may be partial. Shapes: M % 16 == 0, K % 16 == 0. The amax of a copy, when its pointer is
// given, receives max |x| over the tensor (for logging and delayed-scaling recipes).
void quantize_fp8_blockwise(const void* x, DType dtype, int64_t M, int64_t K, Format format, BlockShape block,
                            const DeviceFp8Copy* row, const DeviceFp8Copy* col, DeviceStatus status, Stream stream);

// ---- Dequantization (src/kernels/cuda/dequantize.cu) ------------------------------------------
//
// One copy (rows, cols) back to BF16 or F32, row-major, written to `out` (16-byte aligned).
// Bit-exact with nvfp4::dequantize() for F32 output; BF16 output is its RNE rounding.
//   NVFP4, apply_tensor_scale = false: codes x E4M3 block scale only — exact in BF16; the FP32
//          factor amax / 2688 is left to the caller (a GEMM applies it in alpha). true: times
//          that factor, read from copy.amax on the device (no host synchronization).
//          swizzled_scales: the scales are in the 128x4 layout.
//   MXFP4: codes x E8M0 scale (exact in BF16).
//   FP8:   codes x scale_inv, per tensor (block {0, 0}) or per 1x128 / 128x128 block, in the
//          scale_inv layout quantize_fp8_blockwise writes.
void dequantize_nvfp4(const DeviceNvfp4Copy& copy, int64_t rows, int64_t cols, bool swizzled_scales,
                      bool apply_tensor_scale, void* out, DType out_dtype, Stream stream);
void dequantize_mxfp4(const DeviceNvfp4Copy& copy, int64_t rows, int64_t cols, void* out, DType out_dtype,
                      Stream stream);
void dequantize_fp8(const DeviceFp8Copy& copy, int64_t rows, int64_t cols, Format format, BlockShape block, void* out,
                    DType out_dtype, Stream stream);

}  // namespace nvfp4::cuda
