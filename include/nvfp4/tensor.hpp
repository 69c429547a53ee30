// A host tensor: dtype, shape and row-major little-endian bytes that it owns.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nvfp4/dtype.hpp"

namespace nvfp4 {

struct Tensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // row-major; {} is a scalar
  std::vector<uint8_t> data;   // numel() * dtype_size(dtype) bytes

  int64_t numel() const;
  size_t nbytes() const { return data.size(); }
  std::string shape_string() const;  // "[128, 256]"

  // Values of a floating-point tensor (F64, F32, F16, BF16, F8_*) as FP32. Throws
  // nvfp4::Error for integer or bool tensors. F64 values are rounded to FP32 (RNE).
  std::vector<float> to_f32() const;

  static Tensor from_f32(const std::vector<float>& values, std::vector<int64_t> shape);
  // FP32 values rounded to BF16 (RNE).
  static Tensor from_f32_as_bf16(const std::vector<float>& values, std::vector<int64_t> shape);
  static Tensor from_bytes(DType dtype, std::vector<int64_t> shape, std::vector<uint8_t> bytes);
};

// Number of elements of a shape; throws nvfp4::Error on a negative dimension or overflow.
int64_t shape_numel(const std::vector<int64_t>& shape);
std::string shape_to_string(const std::vector<int64_t>& shape);

}  // namespace nvfp4
