// The `nvfp4` command line, run as a user would: the real binary, real files, exit codes and
// messages. The golden round trip here is the acceptance test: `nvfp4 qtensor` on the
// golden inputs reproduces NVIDIA's reference bytes exactly.
#include <gtest/gtest.h>

#include "cli/cli_test.hpp"
#include "support/test_support.hpp"

#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>

#include "nvfp4/qtensor_file.hpp"
#include "nvfp4/quantize.hpp"
#include "nvfp4/safetensors.hpp"

namespace fs = std::filesystem;

namespace {

const std::string kGolden = std::string(NVFP4_GOLDEN_DIR) + "/nvfp4_te_reference.safetensors";

using Result = nvfp4::test::CliResult;
inline Result run(const std::string& args) { return nvfp4::test::run_cli(args); }

using nvfp4::test::Cli;

TEST_F(Cli, QtensorReproducesEveryGoldenCaseBitExactly) {
  ASSERT_TRUE(fs::exists(kGolden)) << "golden vectors not found at " << kGolden;
  const auto golden = nvfp4::io::SafetensorsFile::open(kGolden);
  const auto cases = nlohmann::json::parse(golden.metadata().at("cases"));
  int checked = 0;
  for (const auto& [name, spec] : cases.items()) {
    SCOPED_TRACE(name);
    std::string args = "qtensor " + kGolden + " " + path(name + ".safetensors") + " --tensor " + name + ".x";
    const bool nv = spec.at("format") == "nvfp4";
    if (nv) {
      args += " --columnwise --block " + std::to_string(spec.at("tile")[0].get<int>()) + "x" +
              std::to_string(spec.at("tile")[1].get<int>());
      if (spec.at("rht_on_columnwise").get<bool>()) {
        args += " --rht --rht-signs " + std::string(spec.at("rht_sign_mask").get<bool>() ? "te" : "none");
      }
    } else {
      args += " --format mxfp4";
    }
    const Result r = run(args);
    ASSERT_EQ(r.status, 0) << r.output;
    const auto out = nvfp4::io::SafetensorsFile::open(path(name + ".safetensors"));
    std::vector<std::string> suffixes = nv ? std::vector<std::string>{".row.q", ".row.s", ".row.amax", ".col.q", ".col.s", ".col.amax"}
                                           : std::vector<std::string>{".row.q", ".row.e8m0"};
    if (nv && spec.at("rht_on_columnwise").get<bool>()) suffixes.push_back(".col.x");
    for (const auto& s : suffixes) {
      const auto& want = golden.at(name + s);
      const auto& got = out.at(name + ".x" + s);
      EXPECT_EQ(got.dtype, want.dtype) << s;
      EXPECT_EQ(got.shape, want.shape) << s;
      const auto wb = golden.bytes(want), gb = out.bytes(got);
      EXPECT_TRUE(wb.size() == gb.size() && std::memcmp(wb.data(), gb.data(), wb.size()) == 0) << s << " differs";
    }
    ++checked;
  }
  EXPECT_GE(checked, 16);
}

TEST_F(Cli, QtensorThenDequantRoundTripsEveryFormat) {
  const std::string in = MakeInput();
  for (const auto& t : nvfp4::format_table()) {
    SCOPED_TRACE(std::string(t.name));
    const std::string q = path(std::string(t.name) + ".q.safetensors"), d = path(std::string(t.name) + ".d.safetensors");
    // layer.proj is [32, 64]: fine for every format row-wise; column-wise needs M % 32 == 0 for mxfp4.
    Result r = run("qtensor " + in + " " + q + " --format " + std::string(t.name) + " --columnwise");
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("skipped norm.weight"), std::string::npos) << r.output;  // 1-D: reported, not quantized
    r = run("dequant " + q + " " + d);
    ASSERT_EQ(r.status, 0) << r.output;
    const auto orig = nvfp4::io::SafetensorsFile::open(in);
    const auto deq = nvfp4::io::SafetensorsFile::open(d);
    for (const std::string name : {"layer.weight", "layer.proj"}) {
      const auto x = orig.load(name).to_f32();
      const auto y = deq.load(name);
      EXPECT_EQ(y.shape, orig.at(name).shape);
      EXPECT_LT(nvfp4::error_stats(x, y.to_f32()).rel_rms, t.gaussian_rel_rms_budget) << name;
    }
    // The column-wise copy decodes to the same tensor within the same budget.
    r = run("dequant " + q + " " + d + " --copy col");
    ASSERT_EQ(r.status, 0) << r.output;
    const auto x = orig.load("layer.weight").to_f32();
    EXPECT_LT(nvfp4::error_stats(x, nvfp4::io::SafetensorsFile::open(d).load("layer.weight").to_f32()).rel_rms,
              t.gaussian_rel_rms_budget);
  }
}

TEST_F(Cli, RhtCopyDequantizesBackToTheOriginalBasis) {
  const std::string in = MakeInput();
  const std::string q = path("q.safetensors"), d = path("d.safetensors");
  ASSERT_EQ(run("qtensor " + in + " " + q + " --columnwise --rht --sr --seed 5 --tensor layer.weight").status, 0);
  const Result r = run("dequant " + q + " " + d + " --copy col --dtype bf16");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("RHT undone"), std::string::npos) << r.output;
  const auto x = nvfp4::io::SafetensorsFile::open(in).load("layer.weight").to_f32();
  const auto y = nvfp4::io::SafetensorsFile::open(d).load("layer.weight");
  EXPECT_EQ(y.dtype, nvfp4::DType::BF16);
  EXPECT_LT(nvfp4::error_stats(x, y.to_f32()).rel_rms, 0.2);
  // The record in the file says how it was made.
  const auto qf = nvfp4::io::SafetensorsFile::open(q);
  const auto rec = nlohmann::json::parse(qf.metadata().at(nvfp4::io::kQuantMetadataKey)).at("layer.weight");
  EXPECT_EQ(rec.at("rounding"), "stochastic");
  EXPECT_EQ(rec.at("sr_seed"), 5);
  EXPECT_EQ(rec.at("rht"), true);
}

TEST_F(Cli, InspectShowsTensorsMetadataAndScaleStatistics) {
  Result r = run("inspect " + kGolden);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("107 tensors"), std::string::npos);
  EXPECT_NE(r.output.find("bf16_1d_rht.col.x"), std::string::npos);
  EXPECT_NE(r.output.find("producer"), std::string::npos);
  EXPECT_NE(r.output.find("col+RHT"), std::string::npos);
  r = run("inspect --json " + kGolden);
  ASSERT_EQ(r.status, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j.at("tensors").size(), 107u);
  EXPECT_EQ(j.at("quantized").size(), 30u);  // 14 NVFP4 cases x 2 copies + 2 MXFP4 row copies
  for (const auto& q : j.at("quantized")) {
    if (q.at("tensor") == "bf16_1d_zeros") {
      EXPECT_EQ(q.at("scales").at("zero"), q.at("scales").at("count"));
    }
  }
}

TEST_F(Cli, FormatsCoversEveryRegisteredFormat) {
  const Result r = run("formats --rows 64 --cols 256 --repeats 1 --json");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  for (const auto& t : nvfp4::format_table()) {
    for (const auto& b : t.blocks) {
      const std::string name = std::string(t.name) + " " + nvfp4::block_name(b);
      int found = 0;
      for (const auto& row : j.at("results")) {
        if (row.at("format") != name) continue;
        ++found;
        ASSERT_TRUE(row.at("ok")) << name;
        EXPECT_GT(row.at("sqnr_db").get<double>(), 10.0) << name;
      }
      EXPECT_EQ(found, 3) << name << ": one row per distribution";
    }
  }
  // On a file: one row per (tensor, format).
  const std::string in = MakeInput();
  const Result f = run("formats " + in + " --repeats 1");
  ASSERT_EQ(f.status, 0) << f.output;
  EXPECT_NE(f.output.find("layer.weight"), std::string::npos);
  EXPECT_NE(f.output.find("nvfp4 16x16"), std::string::npos);
}

TEST_F(Cli, ErrorsNameTheFileTensorOrOption) {
  const std::string in = MakeInput(/*with_nan=*/true);
  Result r = run("qtensor " + path("missing.safetensors") + " " + path("o.safetensors"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("missing.safetensors"), std::string::npos) << r.output;

  r = run("qtensor " + in + " " + path("o.safetensors"));  // layer.proj holds a NaN
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("layer.proj"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("non-finite"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(path("o.safetensors"))) << "nothing may be written on error";

  r = run("qtensor " + in + " " + path("o.safetensors") + " --format nvfp5");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("--format nvfp5"), std::string::npos) << r.output;

  r = run("qtensor " + in + " " + path("o.safetensors") + " --tensor nope");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("nope"), std::string::npos) << r.output;

  r = run("qtensor " + in + " " + path("o.safetensors") + " --tensor layer.weight --block 1x32");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("--block 1x32"), std::string::npos) << r.output;

  // A corrupt file: the header claims more bytes than there are.
  const std::string bad = path("bad.safetensors");
  {
    FILE* f = std::fopen(bad.c_str(), "wb");
    const uint64_t n = 1000;
    std::fwrite(&n, 8, 1, f);
    std::fputs("{}", f);
    std::fclose(f);
  }
  r = run("inspect " + bad);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("bad.safetensors"), std::string::npos) << r.output;

  r = run("frobnicate");
  EXPECT_NE(r.status, 0);
}

TEST_F(Cli, ExistingOutputSurvivesAFailedRun) {
  const std::string in = MakeInput(/*with_nan=*/true);
  const std::string out = path("keep.safetensors");
  nvfp4::io::write_file(out, {{"precious", nvfp4::Tensor::from_f32({1, 2, 3, 4}, {2, 2})}});
  const Result r = run("qtensor " + in + " " + out);
  EXPECT_EQ(r.status, 1);
  const auto f = nvfp4::io::SafetensorsFile::open(out);
  EXPECT_EQ(f.tensors().size(), 1u);
  EXPECT_EQ(f.load("precious").to_f32(), (std::vector<float>{1, 2, 3, 4}));
}

// The subcommands a --help text lists ("" when it lists none).
std::vector<std::string> listed_subcommands(const std::string& help) {
  const size_t at = help.find("Subcommands:");
  if (at == std::string::npos) return {};
  std::istringstream lines(help.substr(at));
  std::vector<std::string> subs;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("  ", 0) != 0) continue;
    std::istringstream words(line);
    std::string name;
    words >> name;
    subs.push_back(name);
  }
  return subs;
}

TEST_F(Cli, HelpForEverySubcommand) {
  // The subcommands are those `nvfp4 --help` lists, so a new one is covered without editing this;
  // a group of commands (`nvfp4 tokenizer`) stands for the commands its --help lists.
  const Result top = run("--help");
  ASSERT_EQ(top.status, 0) << top.output;
  std::vector<std::string> subs = listed_subcommands(top.output);
  ASSERT_GE(subs.size(), 10u) << top.output;
  for (size_t i = 0; i < subs.size(); ++i) {
    const std::string sub = subs[i];
    const Result r = run(sub + " --help");
    EXPECT_EQ(r.status, 0) << sub << ":\n" << r.output;
    // Bad arguments are usage errors, exit 1 (not CLI11's own 1xx codes) with the same prefix.
    const Result bad = run(sub + " --no-such-option");
    EXPECT_EQ(bad.status, 1) << sub << ":\n" << bad.output;
    EXPECT_EQ(bad.output.rfind("nvfp4: ", 0), 0u) << sub << ":\n" << bad.output;
    if (const auto nested = listed_subcommands(r.output); !nested.empty()) {
      for (const auto& n : nested) subs.push_back(sub + " " + n);
    } else {
      EXPECT_NE(r.output.find("--json"), std::string::npos) << sub << ":\n" << r.output;
    }
  }
}

}  // namespace
