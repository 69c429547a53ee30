// Shared by the CUDA quantizer tests (test_quantize_cuda.cu, test_dequantize_cuda.cu): the
// declarative case lists (configs, shapes, data kinds), synthetic inputs, golden-file access,
// byte comparison.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "format/scalar.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/quantize.hpp"
#include "nvfp4/safetensors.hpp"
#include "support/cuda_test.hpp"
#include "support/test_support.hpp"

namespace nvfp4::quantize_test {

using nvfp4::test::DeviceBuffer;

using nvfp4::test::DeviceBuffer;

struct Config {
  const char* name;
  int tile_rows;
  bool row, col, rht;
  uint16_t sign_mask;
  bool sr, swizzled;
};

inline const Config kConfigs[] = {
    {"1x16 row", 1, true, false, false, 0, false, false},
    {"1x16 row SR swizzled", 1, true, false, false, 0, true, true},
    {"1x16 row+col", 1, true, true, false, 0, false, false},
    {"1x16 col only", 1, false, true, false, 0, false, false},
    {"16x16 row+col", 16, true, true, false, 0, false, false},
    {"1x16 row+col RHT", 1, true, true, true, nvfp4::kTeRhtSignMask, false, false},
    {"1x16 row+col RHT(no signs) + SR", 1, true, true, true, 0, true, false},
    {"1x16 row+col SR", 1, true, true, false, 0, true, false},
    {"16x16 row+col SR swizzled", 16, true, true, false, 0, true, true},
    {"1x16 row+col RHT+SR swizzled", 1, true, true, true, nvfp4::kTeRhtSignMask, true, true},
};

struct Shape {
  int64_t M, K;
};
inline const Shape kShapes[] = {{16, 16}, {48, 80}, {64, 64}, {208, 144}, {256, 272}, {1024, 512}, {32, 4096}, {4096, 32}};

enum class Data { gaussian, heavy, rowscale, zeros };
inline const Data kData[] = {Data::gaussian, Data::heavy, Data::rowscale, Data::zeros};
inline const char* data_name(Data d) {
  switch (d) {
    case Data::gaussian: return "gaussian";
    case Data::heavy: return "heavy";
    case Data::rowscale: return "rowscale";
    default: return "zeros";
  }
}

inline std::vector<float> make(Data kind, int64_t M, int64_t K, uint64_t seed, bool bf16) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::student_t_distribution<float> t(2.0f);
  std::vector<float> x(static_cast<size_t>(M * K), 0.0f);
  for (int64_t r = 0; r < M; ++r) {
    const float row_scale = std::ldexp(1.0f, static_cast<int>(r % 40) - 20);  // spans 40 binades
    for (int64_t c = 0; c < K; ++c) {
      float v = 0.0f;
      if (kind == Data::gaussian) v = n(rng);
      if (kind == Data::heavy) v = t(rng);
      if (kind == Data::rowscale) v = n(rng) * row_scale;
      x[r * K + c] = bf16 ? nvfp4::fmt::bf16_round(v) : v;
    }
  }
  return x;
}

inline std::string golden_path() { return std::string(NVFP4_GOLDEN_DIR) + "/nvfp4_te_reference.safetensors"; }
inline nlohmann::json golden_cases(const nvfp4::io::SafetensorsFile& f) { return nlohmann::json::parse(f.metadata().at("cases")); }
inline std::vector<uint8_t> tensor_bytes(const nvfp4::io::SafetensorsFile& f, const std::string& name) {
  const auto b = f.bytes(f.at(name));
  return {b.begin(), b.end()};
}

// Runs fn(file, name, spec, dx, M, K) for every golden case of `format` ("nvfp4",
// "mxfp4_scale_round_up"), with the case's input uploaded to dx; returns how many ran. A missing
// golden file is a failure naming the path.
template <typename Fn>
int for_each_golden_case(const std::string& format, Fn&& fn) {
  const std::string path = golden_path();
  if (!std::filesystem::exists(path)) {
    ADD_FAILURE() << "golden vectors not found at " << path;
    return 0;
  }
  const auto f = nvfp4::io::SafetensorsFile::open(path);
  const nlohmann::json cases = golden_cases(f);  // a named object: items() refers into it
  int ran = 0;
  for (const auto& [name, spec] : cases.items()) {
    if (spec.at("format") != format) continue;
    SCOPED_TRACE(name);
    const nvfp4::Tensor x = f.load(name + ".x");
    DeviceBuffer<uint8_t> dx(x.data.size());
    EXPECT_EQ(cudaMemcpy(dx.ptr, x.data.data(), x.data.size(), cudaMemcpyHostToDevice), cudaSuccess);
    fn(f, name, spec, x.dtype, dx, spec.at("M").get<int64_t>(), spec.at("N").get<int64_t>());
    ++ran;
  }
  return ran;
}

// Values (already representable in dtype) as the bytes of a BF16 or F32 tensor.
inline std::vector<uint8_t> input_bytes(const std::vector<float>& x, nvfp4::DType dtype) {
  const size_t esize = dtype == nvfp4::DType::BF16 ? 2 : 4;
  std::vector<uint8_t> host(x.size() * esize);
  for (size_t i = 0; i < x.size(); ++i) {
    if (esize == 2) {
      const uint16_t h = nvfp4::fmt::bf16_encode(x[i]);
      std::memcpy(host.data() + 2 * i, &h, 2);
    } else {
      std::memcpy(host.data() + 4 * i, &x[i], 4);
    }
  }
  return host;
}

inline std::string first_diff(const std::vector<uint8_t>& want, const std::vector<uint8_t>& got) {
  if (want.size() != got.size()) return "size " + std::to_string(got.size()) + " vs " + std::to_string(want.size());
  size_t n = 0, first = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (want[i] != got[i] && n++ == 0) first = i;
  }
  if (n == 0) return {};
  return std::to_string(n) + " bytes differ, first at " + std::to_string(first) + ": want " + std::to_string(want[first]) +
         " got " + std::to_string(got[first]);
}

using nvfp4::test::expect_error;

// Options of format f with block b (empty: the format's default).
inline nvfp4::QuantizeOptions opts(nvfp4::Format f, std::optional<nvfp4::BlockShape> b = std::nullopt) {
  nvfp4::QuantizeOptions o;
  o.format = f;
  o.block = b;
  return o;
}

}  // namespace nvfp4::quantize_test
