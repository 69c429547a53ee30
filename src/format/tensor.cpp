#include "nvfp4/tensor.hpp"

#include <cstring>
#include <limits>

#include "format/scalar.hpp"
#include "nvfp4/error.hpp"

namespace nvfp4 {

int64_t shape_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw Error("tensor shape " + shape_to_string(shape) + " has a negative dimension");
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) {
      throw Error("tensor shape " + shape_to_string(shape) + " has more elements than fit in 64 bits");
    }
    n *= d;
  }
  return n;
}

std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

int64_t Tensor::numel() const { return shape_numel(shape); }

std::string Tensor::shape_string() const { return shape_to_string(shape); }

std::vector<float> Tensor::to_f32() const {
  const int64_t n = numel();
  if (static_cast<uint64_t>(n) * dtype_size(dtype) != data.size()) {
    throw Error("tensor of shape " + shape_string() + " and dtype " + std::string(dtype_name(dtype)) + " holds " +
                std::to_string(data.size()) + " bytes, expected " + std::to_string(n * dtype_size(dtype)));
  }
  std::vector<float> out(static_cast<size_t>(n));
  const uint8_t* p = data.data();
  switch (dtype) {
    case DType::F32:
      std::memcpy(out.data(), p, data.size());
      break;
    case DType::F64:
      for (int64_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, p + 8 * i, 8);
        out[i] = static_cast<float>(d);
      }
      break;
    case DType::BF16:
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = dtype == DType::BF16 ? fmt::bf16_decode(h) : fmt::fp16_decode(h);
      }
      break;
    case DType::F8_E4M3:
      for (int64_t i = 0; i < n; ++i) out[i] = fmt::e4m3_decode(p[i]);
      break;
    case DType::F8_E5M2:
      for (int64_t i = 0; i < n; ++i) out[i] = fmt::e5m2_decode(p[i]);
      break;
    case DType::F8_E8M0:
      for (int64_t i = 0; i < n; ++i) out[i] = fmt::e8m0_decode(p[i]);
      break;
    default:
      throw Error("tensor dtype " + std::string(dtype_name(dtype)) +
                  " is not a floating-point type; only F64, F32, F16, BF16 and F8_* convert to FP32");
  }
  return out;
}

namespace {
// An empty tensor of `dtype` and `shape` sized for `n_values` values (which must fill it).
Tensor sized_for(DType dtype, std::vector<int64_t> shape, size_t n_values, const char* who) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  if (static_cast<size_t>(t.numel()) != n_values) {
    throw Error(std::string(who) + ": " + std::to_string(n_values) + " values do not fill shape " + t.shape_string());
  }
  t.data.resize(n_values * dtype_size(dtype));
  return t;
}
}  // namespace

Tensor Tensor::from_f32(const std::vector<float>& values, std::vector<int64_t> shape) {
  Tensor t = sized_for(DType::F32, std::move(shape), values.size(), "from_f32");
  if (!values.empty()) std::memcpy(t.data.data(), values.data(), t.data.size());
  return t;
}

Tensor Tensor::from_f32_as_bf16(const std::vector<float>& values, std::vector<int64_t> shape) {
  Tensor t = sized_for(DType::BF16, std::move(shape), values.size(), "from_f32_as_bf16");
  for (size_t i = 0; i < values.size(); ++i) {
    const uint16_t h = fmt::bf16_encode(values[i]);
    std::memcpy(t.data.data() + 2 * i, &h, 2);
  }
  return t;
}

Tensor Tensor::from_bytes(DType dtype, std::vector<int64_t> shape, std::vector<uint8_t> bytes) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  if (static_cast<uint64_t>(t.numel()) * dtype_size(dtype) != bytes.size()) {
    throw Error("from_bytes: " + std::to_string(bytes.size()) + " bytes do not fill a " +
                std::string(dtype_name(dtype)) + " tensor of shape " + t.shape_string());
  }
  t.data = std::move(bytes);
  return t;
}

}  // namespace nvfp4
