// The one CUDA quantization entry (include/nvfp4/cuda_quantize.hpp): cuda::quantize() and
// cuda::dequantize() dispatch on options.format to the per-format files (quantize_nvfp4.cu,
// quantize_mxfp4.cu, quantize_fp8.cu, dequantize.cu), as nvfp4::quantize() does on the CPU
// (src/kernels/cpu/quantize.cpp). Buffer sizes of a copy come from the same place.
#include <string>

#include "format/rht.hpp"
#include "format/swizzle.hpp"
#include "kernels/cuda/quantize_formats.hpp"
#include "nvfp4/error.hpp"

namespace nvfp4::cuda {

namespace {

BlockShape resolved_block(const QuantizeOptions& o) { return o.block.value_or(format_traits(o.format).default_block); }

// MXFP4's 32-point RHT is a pass of its own before quantizing; NVFP4's 16-point RHT runs inside
// the quantizing kernel.
bool rht_is_separate_pass(const QuantizeOptions& o) {
  return o.rht && format_traits(o.format).rht_points == fmt::kRht32Size;
}

}  // namespace

DeviceCopyBytes device_copy_bytes(const QuantizeOptions& options, int64_t rows, int64_t cols) {
  if (rows < 0 || cols < 0) throw Error("device_copy_bytes: negative shape");
  const FormatTraits& t = format_traits(options.format);
  const BlockShape b = resolved_block(options);
  DeviceCopyBytes s;
  s.codes = rows * cols * t.element_bits / 8;
  if (t.scale_dtype) {  // byte-coded block scales, one per b.cols values of a row
    const int64_t per_row = cols / b.cols;
    s.scales = options.swizzled_scales ? fmt::swizzled_scale_bytes(rows, per_row) : rows * per_row;
  } else {  // FP32 decode factors: per tensor, per 1xN block, per NxN tile
    const int64_t n = b.per_tensor() ? 1 : ((rows + b.rows - 1) / b.rows) * ((cols + b.cols - 1) / b.cols);
    s.scale_inv = n * int64_t(sizeof(float));
  }
  if (t.tensor_scale_from_amax || !t.scale_dtype) s.amax = sizeof(float);
  return s;
}

int64_t quantize_scratch_bytes(const QuantizeOptions& options, DType dtype, int64_t M, int64_t K) {
  return rht_is_separate_pass(options) ? M * K * dtype_size(dtype) : 0;
}

void quantize(const void* x, DType dtype, int64_t M, int64_t K, const QuantizeOptions& options, const DeviceCopy* row,
              const DeviceCopy* col, DeviceStatus status, Stream stream, AmaxInput amax, void* scratch) {
  const FormatTraits& t = format_traits(options.format);
  if (t.element_bits == 8) {
    formats::quantize_fp8(x, dtype, M, K, options, row, col, status, stream, amax);
    return;
  }
  if (t.tensor_scale_from_amax) {  // NVFP4: the FP32 tensor scale from the amax
    formats::quantize_nvfp4(x, dtype, M, K, options, row, col, status, stream, amax);
    return;
  }
  // MXFP4 (both scale rules): no tensor scale, one pass; under RHT the transform goes first.
  if (amax == AmaxInput::given) throw Error("quantize: " + std::string(t.name) + " has no per-tensor amax to give");
  const void* src = x;
  if (rht_is_separate_pass(options)) {
    if (row) throw Error("quantize: a " + std::string(t.name) + " RHT copy cannot share a kernel call with a row-wise copy");
    if (!scratch) {
      throw Error("quantize: " + std::string(t.name) + " under RHT needs scratch (quantize_scratch_bytes: M x K elements of dtype)");
    }
    rht32_columns(x, dtype, M, K, scratch, stream);
    src = scratch;
  }
  formats::quantize_mxfp4(src, dtype, M, K, options, row, col, status, stream);
}

void dequantize(const DeviceCopy& copy, int64_t rows, int64_t cols, const QuantizeOptions& options,
                bool apply_tensor_scale, void* out, DType out_dtype, Stream stream) {
  const FormatTraits& t = format_traits(options.format);
  if (t.element_bits == 8) {
    formats::dequantize_fp8(copy, rows, cols, options.format, resolved_block(options), out, out_dtype, stream);
  } else if (t.tensor_scale_from_amax) {
    formats::dequantize_nvfp4(copy, rows, cols, options.swizzled_scales, apply_tensor_scale, out, out_dtype, stream);
  } else {
    formats::dequantize_mxfp4(copy, rows, cols, out, out_dtype, stream);
  }
}

}  // namespace nvfp4::cuda
