// Dequantization on Hopper: NVFP4, MXFP4 and FP8 copies back to BF16 or FP32.
//
// Layout: a group = 16 consecutive elements of a row (one NVFP4 block, half an MXFP4 block, 16
// FP8 codes); threads take groups grid-stride, kUnroll at a time. A group is read with one
// 8-byte (FP4) or 16-byte (FP8) load plus its scale, and written as 32 (BF16) or 64 (FP32)
// bytes of 16-byte stores: consecutive threads touch consecutive memory in every stream.
// Values are the format core's decode functions (src/format/), in the CPU reference's order,
// so FP32 output equals nvfp4::dequantize() bit for bit and BF16 output is its RNE rounding.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <string>
#include <type_traits>

#include "format/fp8.hpp"
#include "format/mxfp4.hpp"
#include "format/nvfp4.hpp"
#include "format/swizzle.hpp"
#include "nvfp4/cuda_check.hpp"
#include "nvfp4/cuda_quantize.hpp"
#include "nvfp4/error.hpp"
#include "kernels/cuda/quantize_formats.hpp"

namespace nvfp4::cuda {

namespace {

constexpr int kGroup = 16;  // elements per thread

// Writes 16 FP32 values as BF16 (RNE; exact when the value is representable) or FP32.
template <typename Out>
__device__ __forceinline__ void store16(Out* dst, const float (&v)[kGroup]) {
  if constexpr (std::is_same_v<Out, float>) {
#pragma unroll
    for (int q = 0; q < 4; ++q) reinterpret_cast<float4*>(dst)[q] = make_float4(v[4 * q], v[4 * q + 1], v[4 * q + 2], v[4 * q + 3]);
  } else {
    uint32_t w[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const __nv_bfloat162 p = __floats2bfloat162_rn(v[2 * j], v[2 * j + 1]);  // .x = low half = element 2j
      w[j] = *reinterpret_cast<const uint32_t*>(&p);
    }
    reinterpret_cast<uint4*>(dst)[0] = make_uint4(w[0], w[1], w[2], w[3]);
    reinterpret_cast<uint4*>(dst)[1] = make_uint4(w[4], w[5], w[6], w[7]);
  }
}

enum class Kind { nvfp4, mxfp4, fp8 };

struct DequantArgs {
  int64_t rows, cols;
  const uint8_t* codes;
  const uint8_t* scales;     // NVFP4 E4M3 / MXFP4 E8M0 block scales
  const float* scale_inv;    // FP8 decode factors
  const float* amax;         // NVFP4: the copy's amax, when the tensor factor is applied
  bool swizzled;             // NVFP4 scales in the 128x4 layout
  int block_rows, block_cols;  // FP8: 0, 0 = per tensor
  fmt::Fp8Kind fp8_kind;
};

// Raw inputs of one group: its codes and its scale (FP4) or decode factor (FP8).
struct GroupIn {
  uint4 codes;  // FP8: 16 codes; FP4: .x, .y hold 16 nibbles
  uint8_t scale;
  float scale_inv;
};

template <Kind kKind>
__device__ __forceinline__ GroupIn load_group(const DequantArgs& a, int64_t g) {
  const int64_t groups_per_row = a.cols / kGroup;
  const int64_t r = g / groups_per_row, c16 = g % groups_per_row;
  GroupIn in{};
  if constexpr (kKind == Kind::fp8) {
    in.codes = *reinterpret_cast<const uint4*>(a.codes + g * kGroup);
    in.scale_inv = a.scale_inv[0];
    if (a.block_rows > 0) {  // 16 | block_cols, so the group lies in one block
      const int64_t scale_cols = (a.cols + a.block_cols - 1) / a.block_cols;
      in.scale_inv = a.scale_inv[(r / a.block_rows) * scale_cols + (c16 * kGroup) / a.block_cols];
    }
  } else {
    const uint2 q = *reinterpret_cast<const uint2*>(a.codes + g * (kGroup / 2));
    in.codes = make_uint4(q.x, q.y, 0, 0);
    if constexpr (kKind == Kind::nvfp4) {
      const int64_t scale_cols = a.cols / 16;
      in.scale = a.scales[a.swizzled ? fmt::swizzled_scale_offset(r, c16, scale_cols) : r * scale_cols + c16];
    } else {
      in.scale = a.scales[r * (a.cols / 32) + c16 / 2];
    }
  }
  return in;
}

template <Kind kKind, bool kTensorFactor>
__device__ __forceinline__ void decode_group(const GroupIn& in, const DequantArgs& a, float f, float (&v)[kGroup]) {
  if constexpr (kKind == Kind::fp8) {
    const uint32_t w[4] = {in.codes.x, in.codes.y, in.codes.z, in.codes.w};
#pragma unroll
    for (int j = 0; j < kGroup; ++j) v[j] = fmt::fp8_decode(uint8_t(w[j / 4] >> (8 * (j % 4))), a.fp8_kind) * in.scale_inv;
  } else if constexpr (kKind == Kind::nvfp4) {
    const float sf = fmt::e4m3_decode(in.scale);
#pragma unroll
    for (int j = 0; j < kGroup; ++j) {
      const uint8_t code = uint8_t(((j < 8 ? in.codes.x : in.codes.y) >> (4 * (j % 8))) & 0xFu);
      // NOTE: e2m1 * scale is exact (at most 6 significant bits); the tensor factor is the
      // last multiply, as in fmt::nvfp4_decode (left to right).
      v[j] = fmt::e2m1_decode(code) * sf;
      if constexpr (kTensorFactor) v[j] = v[j] * f;
    }
  } else {
#pragma unroll
    for (int j = 0; j < kGroup; ++j) {
      v[j] = fmt::mxfp4_decode(uint8_t(((j < 8 ? in.codes.x : in.codes.y) >> (4 * (j % 8))) & 0xFu), in.scale);
    }
  }
}

// kUnroll groups per thread and iteration, loads first: several loads in flight per thread
// (one 8-byte load each would leave the memory system idle between them).
constexpr int kUnroll = 4;

template <Kind kKind, typename Out, bool kTensorFactor>
__global__ void __launch_bounds__(256) dequantize_kernel(DequantArgs a, Out* __restrict__ out) {
  const int64_t groups = a.rows * (a.cols / kGroup);
  // NOTE: amax / 2688 is computed per thread exactly as the CPU computes it once per tensor.
  const float f = kTensorFactor ? fmt::nvfp4_tensor_decode_factor(*a.amax) : 1.0f;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t g0 = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; g0 < groups; g0 += stride * kUnroll) {
    GroupIn in[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (g0 + u * stride < groups) in[u] = load_group<kKind>(a, g0 + u * stride);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (g0 + u * stride >= groups) break;
      float v[kGroup];
      decode_group<kKind, kTensorFactor>(in[u], a, f, v);
      store16(out + (g0 + u * stride) * kGroup, v);
    }
  }
}

void validate(const char* fn, const uint8_t* codes, int64_t rows, int64_t cols, int64_t multiple, void* out,
              DType out_dtype, size_t codes_align) {
  const std::string f(fn);
  if (out_dtype != DType::BF16 && out_dtype != DType::F32) {
    throw Error(f + ": output dtype " + std::string(dtype_name(out_dtype)) + " is not supported; use BF16 or F32");
  }
  if (rows < 0 || cols < 0) throw Error(f + ": negative shape");
  if (cols % multiple != 0) {
    throw Error(f + ": cols = " + std::to_string(cols) + " is not a multiple of " + std::to_string(multiple) +
                " (the copy's block size)");
  }
  if (rows * cols > 0 && (codes == nullptr || out == nullptr)) throw Error(f + ": codes or output pointer is null");
  if (reinterpret_cast<uintptr_t>(out) % 16 != 0) throw Error(f + ": the output must be 16-byte aligned");
  if (reinterpret_cast<uintptr_t>(codes) % codes_align != 0) {
    throw Error(f + ": codes must be " + std::to_string(codes_align) + "-byte aligned");
  }
}

template <Kind kKind, bool kTensorFactor>
void launch(const DequantArgs& a, void* out, DType out_dtype, Stream stream, const char* fn) {
  const int64_t groups = a.rows * (a.cols / kGroup);
  if (groups == 0) return;
  int sms = 0, dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  const int64_t per_block = 256 * kUnroll;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((groups + per_block - 1) / per_block, int64_t(sms) * 16));
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  if (out_dtype == DType::BF16) {
    dequantize_kernel<kKind, __nv_bfloat16, kTensorFactor><<<blocks, 256, 0, s>>>(a, static_cast<__nv_bfloat16*>(out));
  } else {
    dequantize_kernel<kKind, float, kTensorFactor><<<blocks, 256, 0, s>>>(a, static_cast<float*>(out));
  }
  check(cudaGetLastError(), fn);
}

// The checks and arguments of an FP4 copy (codes two per byte, a byte scale per `block` values).
DequantArgs fp4_args(const char* fn, const DeviceCopy& copy, int64_t rows, int64_t cols, int64_t block, void* out,
                     DType out_dtype) {
  validate(fn, copy.codes, rows, cols, block, out, out_dtype, 8);
  if (rows * cols > 0 && !copy.scales) throw Error(std::string(fn) + ": scales pointer is null");
  DequantArgs a{};
  a.rows = rows;
  a.cols = cols;
  a.codes = copy.codes;
  a.scales = copy.scales;
  return a;
}

}  // namespace

namespace formats {

void dequantize_nvfp4(const DeviceCopy& copy, int64_t rows, int64_t cols, bool swizzled_scales,
                      bool apply_tensor_scale, void* out, DType out_dtype, Stream stream) {
  DequantArgs a = fp4_args("dequantize_nvfp4", copy, rows, cols, 16, out, out_dtype);
  if (apply_tensor_scale && rows * cols > 0 && !copy.amax) {
    throw Error("dequantize_nvfp4: apply_tensor_scale needs the copy's amax pointer");
  }
  a.amax = copy.amax;
  a.swizzled = swizzled_scales;
  if (apply_tensor_scale) launch<Kind::nvfp4, true>(a, out, out_dtype, stream, "dequantize_nvfp4 launch");
  else launch<Kind::nvfp4, false>(a, out, out_dtype, stream, "dequantize_nvfp4 launch");
}

void dequantize_mxfp4(const DeviceCopy& copy, int64_t rows, int64_t cols, void* out, DType out_dtype,
                      Stream stream) {
  const DequantArgs a = fp4_args("dequantize_mxfp4", copy, rows, cols, 32, out, out_dtype);
  launch<Kind::mxfp4, false>(a, out, out_dtype, stream, "dequantize_mxfp4 launch");
}

void dequantize_fp8(const DeviceCopy& copy, int64_t rows, int64_t cols, Format format, BlockShape block, void* out,
                    DType out_dtype, Stream stream) {
  if (format != Format::fp8_e4m3 && format != Format::fp8_e5m2) {
    throw Error("dequantize_fp8: format " + std::string(format_traits(format).name) + " is not an FP8 format");
  }
  if (!block.per_tensor() && block != BlockShape{1, 128} && block != BlockShape{128, 128}) {
    throw Error("dequantize_fp8: block " + block_name(block) + " is not supported; use tensor, 1x128 or 128x128");
  }
  validate("dequantize_fp8", copy.codes, rows, cols, 16, out, out_dtype, 16);
  if (rows * cols > 0 && !copy.scale_inv) throw Error("dequantize_fp8: scale_inv pointer is null");
  DequantArgs a{};
  a.rows = rows;
  a.cols = cols;
  a.codes = copy.codes;
  a.scale_inv = copy.scale_inv;
  a.block_rows = block.rows;
  a.block_cols = block.cols;
  a.fp8_kind = format == Format::fp8_e4m3 ? fmt::Fp8Kind::e4m3 : fmt::Fp8Kind::e5m2;
  launch<Kind::fp8, false>(a, out, out_dtype, stream, "dequantize_fp8 launch");
}

}  // namespace formats

}  // namespace nvfp4::cuda
