// The fixture of the CLI suites (test_cli.cpp, test_cli_reliability.cpp): a scratch folder per
// test and a small input file with matrices every format can quantize.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "nvfp4/safetensors.hpp"
#include "support/test_support.hpp"

namespace nvfp4::test {

inline constexpr char kCliPrefix[] = "nvfp4_cli_";

class Cli : public ScratchDirTest<kCliPrefix> {
 protected:
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // A file with a BF16 [64, 128] tensor, an F32 [32, 64] tensor and a 1-D tensor.
  std::string MakeInput(bool with_nan = false) {
    std::mt19937_64 rng(3);
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::vector<float> a(64 * 128), b(32 * 64), c(64);
    for (auto& v : a) v = d(rng);
    for (auto& v : b) v = d(rng);
    for (auto& v : c) v = d(rng);
    if (with_nan) b[100] = std::nanf("");
    const std::string p = path("in.safetensors");
    io::write_file(p, {{"layer.weight", Tensor::from_f32_as_bf16(a, {64, 128})},
                       {"layer.proj", Tensor::from_f32(b, {32, 64})},
                       {"norm.weight", Tensor::from_f32(c, {64})}});
    return p;
  }
};

}  // namespace nvfp4::test
