// Bit-exact agreement with NVIDIA Transformer Engine's reference quantizer.
//
// ../shared/golden/nvfp4_te_reference.safetensors holds TE's own outputs (codes, scales,
// amax of both copies, post-RHT inputs) for a list of cases described in its metadata. Every
// byte must match. The file is read with our own safetensors reader. A missing file is a
// FAILURE, not a skip: this test is the bar every quantizer is held to.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "format/scalar.hpp"
#include "nvfp4/quantize.hpp"
#include "nvfp4/safetensors.hpp"

namespace {

const std::string kGoldenPath = std::string(NVFP4_GOLDEN_DIR) + "/nvfp4_te_reference.safetensors";

struct GoldenCase {
  std::string name;
  nlohmann::json spec;
};

// Describes the first differing byte, so a failure says where to look.
std::string first_difference(std::span<const uint8_t> want, std::span<const uint8_t> got, int64_t row_bytes) {
  if (want.size() != got.size()) {
    return "size " + std::to_string(got.size()) + " bytes, expected " + std::to_string(want.size());
  }
  int64_t diffs = 0, first = -1;
  for (size_t i = 0; i < want.size(); ++i) {
    if (want[i] != got[i]) {
      if (first < 0) first = static_cast<int64_t>(i);
      ++diffs;
    }
  }
  if (diffs == 0) return {};
  char buf[160];
  std::snprintf(buf, sizeof buf, "%lld of %zu bytes differ; first at [%lld, %lld]: expected 0x%02x, got 0x%02x",
                static_cast<long long>(diffs), want.size(), static_cast<long long>(first / row_bytes),
                static_cast<long long>(first % row_bytes), want[first], got[first]);
  return buf;
}

class Golden : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(kGoldenPath)) return;  // each test FAILS below with the path
    file_ = new nvfp4::io::SafetensorsFile(nvfp4::io::SafetensorsFile::open(kGoldenPath));
  }
  static void TearDownTestSuite() {
    delete file_;
    file_ = nullptr;
  }
  static nvfp4::io::SafetensorsFile* file_;

  void RequireFile() {
    ASSERT_NE(file_, nullptr) << "golden vectors not found at " << kGoldenPath
                              << " — they ship in ../shared/golden next to the checkout; without them the "
                                 "quantizers cannot be checked against NVIDIA's reference";
  }

  std::vector<GoldenCase> Cases() {
    std::vector<GoldenCase> out;
    const auto& md = file_->metadata();
    const auto it = md.find("cases");
    if (it == md.end()) {
      ADD_FAILURE() << kGoldenPath << " has no 'cases' metadata";
      return out;
    }
    const auto cases = nlohmann::json::parse(it->second);
    for (const auto& [name, spec] : cases.items()) out.push_back({name, spec});
    return out;
  }

  std::span<const uint8_t> Bytes(const std::string& name) { return file_->bytes(file_->at(name)); }

  float Scalar(const std::string& name) {
    const auto b = Bytes(name);
    EXPECT_EQ(b.size(), 4u) << name;
    float f = 0;
    std::memcpy(&f, b.data(), 4);
    return f;
  }
};

nvfp4::io::SafetensorsFile* Golden::file_ = nullptr;

TEST_F(Golden, FileHasTheDocumentedCases) {
  ASSERT_NO_FATAL_FAILURE(RequireFile());
  const auto cases = Cases();
  EXPECT_GE(cases.size(), 16u);
  int nvfp4 = 0, mx = 0;
  for (const auto& c : cases) {
    const std::string f = c.spec.at("format");
    nvfp4 += f == "nvfp4";
    mx += f == "mxfp4_scale_round_up";
  }
  EXPECT_GE(nvfp4, 14);
  EXPECT_GE(mx, 2);
}

TEST_F(Golden, Nvfp4BothCopiesBitExact) {
  ASSERT_NO_FATAL_FAILURE(RequireFile());
  int checked = 0;
  for (const auto& c : Cases()) {
    if (c.spec.at("format") != "nvfp4") continue;
    SCOPED_TRACE("case " + c.name + ": " + c.spec.dump());
    const nvfp4::Tensor x = file_->load(c.name + ".x");
    const int64_t M = c.spec.at("M"), N = c.spec.at("N");
    ASSERT_EQ(x.shape, (std::vector<int64_t>{M, N}));

    nvfp4::QuantizeOptions o;
    o.format = nvfp4::Format::nvfp4;
    o.block = nvfp4::BlockShape{c.spec.at("tile")[0].get<int>(), c.spec.at("tile")[1].get<int>()};
    o.rowwise = true;
    o.columnwise = true;
    o.rht = c.spec.at("rht_on_columnwise").get<bool>();
    if (o.rht) o.rht_sign_mask = c.spec.at("rht_sign_mask").get<bool>() ? nvfp4::kTeRhtSignMask : 0;
    const auto q = nvfp4::quantize(x.to_f32(), M, N, o, x.dtype);

    EXPECT_EQ(nvfp4::fmt::f32_bits(q.row->amax), nvfp4::fmt::f32_bits(Scalar(c.name + ".row.amax"))) << "row amax";
    EXPECT_EQ(first_difference(Bytes(c.name + ".row.q"), q.row->codes, N / 2), "") << "row-wise codes";
    EXPECT_EQ(first_difference(Bytes(c.name + ".row.s"), q.row->scales, N / 16), "") << "row-wise scales";

    if (o.rht) {
      const auto want_x = Bytes(c.name + ".col.x");
      std::vector<uint8_t> got_x(q.col_rht_input.size() * 2);
      for (size_t i = 0; i < q.col_rht_input.size(); ++i) {
        const uint16_t h = nvfp4::fmt::bf16_encode(q.col_rht_input[i]);
        std::memcpy(got_x.data() + 2 * i, &h, 2);
      }
      EXPECT_EQ(first_difference(want_x, got_x, 2 * M), "") << "post-RHT column-wise input (BF16)";
    }
    EXPECT_EQ(nvfp4::fmt::f32_bits(q.col->amax), nvfp4::fmt::f32_bits(Scalar(c.name + ".col.amax"))) << "col amax";
    EXPECT_EQ(first_difference(Bytes(c.name + ".col.q"), q.col->codes, M / 2), "") << "column-wise codes";
    EXPECT_EQ(first_difference(Bytes(c.name + ".col.s"), q.col->scales, M / 16), "") << "column-wise scales";
    ++checked;
  }
  EXPECT_GE(checked, 14);
}

TEST_F(Golden, Mxfp4RoundUpBitExact) {
  ASSERT_NO_FATAL_FAILURE(RequireFile());
  int checked = 0;
  for (const auto& c : Cases()) {
    if (c.spec.at("format") != "mxfp4_scale_round_up") continue;
    SCOPED_TRACE("case " + c.name + ": " + c.spec.dump());
    const nvfp4::Tensor x = file_->load(c.name + ".x");
    const int64_t M = c.spec.at("M"), N = c.spec.at("N");
    nvfp4::QuantizeOptions o;
    o.format = nvfp4::Format::mxfp4;
    const auto q = nvfp4::quantize(x.to_f32(), M, N, o, x.dtype);
    EXPECT_EQ(first_difference(Bytes(c.name + ".row.q"), q.row->codes, N / 2), "") << "codes";
    EXPECT_EQ(first_difference(Bytes(c.name + ".row.e8m0"), q.row->scales, N / 32), "") << "E8M0 scales";
    ++checked;
  }
  EXPECT_GE(checked, 2);
}

}  // namespace
