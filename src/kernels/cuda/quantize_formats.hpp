// The per-format CUDA quantizers and dequantizers that cuda::quantize() / cuda::dequantize()
// (src/kernels/cuda/quantize.cu) dispatch to: one file per format (quantize_nvfp4.cu,
// quantize_mxfp4.cu, quantize_fp8.cu) and dequantize.cu. Private to src/kernels/cuda/; callers
// use include/nvfp4/cuda_quantize.hpp. Arguments as documented there; each entry checks that
// options.format is one of its own.
#pragma once

#include <cstdint>

#include "nvfp4/cuda_quantize.hpp"

namespace nvfp4::cuda::formats {

// amax: compute (a separate amax pass first) or given (read from the copies' amax).
void quantize_nvfp4(const void* x, DType dtype, int64_t M, int64_t K, const QuantizeOptions& options,
                    const DeviceCopy* row, const DeviceCopy* col, DeviceStatus status, Stream stream, AmaxInput amax);
void quantize_mxfp4(const void* x, DType dtype, int64_t M, int64_t K, const QuantizeOptions& options,
                    const DeviceCopy* row, const DeviceCopy* col, DeviceStatus status, Stream stream);
// Per tensor (amax compute or given) or per 1x128 / 128x128 block (amax compute: optional output).
void quantize_fp8(const void* x, DType dtype, int64_t M, int64_t K, const QuantizeOptions& options,
                  const DeviceCopy* row, const DeviceCopy* col, DeviceStatus status, Stream stream, AmaxInput amax);

void dequantize_nvfp4(const DeviceCopy& copy, int64_t rows, int64_t cols, bool swizzled_scales,
                      bool apply_tensor_scale, void* out, DType out_dtype, Stream stream);
void dequantize_mxfp4(const DeviceCopy& copy, int64_t rows, int64_t cols, void* out, DType out_dtype, Stream stream);
void dequantize_fp8(const DeviceCopy& copy, int64_t rows, int64_t cols, Format format, BlockShape block, void* out,
                    DType out_dtype, Stream stream);

}  // namespace nvfp4::cuda::formats
