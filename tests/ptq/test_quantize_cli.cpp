// `nvfp4 quantize` end to end on a model written by the test (nvfp4's byte tokenizer): both
// formats, the metadata, the JSON report, and the errors a user can make.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "../infer/tiny_hf_model.hpp"
#include "nvfp4/nvfp4_checkpoint.hpp"
#include "nvfp4/safetensors.hpp"
#include "nvfp4/token_shards.hpp"  // io::read_input_text
#include "nvfp4/tokenizer.hpp"
#include "support/test_support.hpp"

namespace {

namespace fs = std::filesystem;
constexpr char kPrefix[] = "nvfp4_quantize_cli_";
using PtqQuantizeCli = nvfp4::test::ScratchDirTest<kPrefix>;

TEST_F(PtqQuantizeCli, WritesBothFormatsWithTheirMetadata) {
  const fs::path& dir = dir_;
  auto c = nvfp4::test::tiny_config("llama");
  c.vocab = 257;
  c.seq_len = 128;
  nvfp4::test::write_tiny_hf_model(dir / "m", "llama", c, 91);
  std::ofstream(dir / "m" / "nvfp4_tokenizer.json") << nvfp4::io::ByteTokenizer().describe() << "\n";
  std::ofstream(dir / "a.txt") << "calibration text, the first document of two; it has some words in it.";
  const std::string second = "a second document for the calibration set, a little longer than the first one is.";
  std::ofstream(dir / "b.txt") << second;
  const std::string m = (dir / "m").string(), calib = " --calib " + (dir / "a.txt").string() + " " + (dir / "b.txt").string();

  auto r = nvfp4::test::run_cli("quantize " + m + " " + (dir / "mo").string() + calib +
                                " --scales mse --gptq --keep-bf16 '*.down_proj' --window 64 --json");
  ASSERT_EQ(r.status, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j.at("quantized_layers"), 12);  // 2 blocks x 6 (down_proj kept)
  EXPECT_EQ(j.at("kept_bf16"), nlohmann::json({"model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj", "lm_head"}));
  EXPECT_EQ(j.at("calib_documents"), 2);
  const auto ck = nvfp4::io::Checkpoint::open((dir / "mo").string());
  EXPECT_EQ(ck.metadata().at("scale_rule"), "mse");
  EXPECT_EQ(ck.metadata().at("calib_hash"), j.at("calib_hash"));
  EXPECT_EQ(ck.info("model.layers.0.self_attn.q_proj.weight").dtype, nvfp4::DType::U8);
  EXPECT_EQ(ck.info("model.layers.0.mlp.down_proj.weight").dtype, nvfp4::DType::F32);  // kept as it was
  EXPECT_TRUE(fs::exists(dir / "mo" / "hf_quant_config.json"));
  EXPECT_TRUE(fs::exists(dir / "mo" / "nvfp4_tokenizer.json"));

  r = nvfp4::test::run_cli("quantize " + m + " " + (dir / "ho").string() + " --calib " + (dir / "a.txt").string() +
                           " --holdout " + (dir / "b.txt").string() + " --window 64 --json");
  ASSERT_EQ(r.status, 0) << r.output;
  j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j.at("coverage").at("holdout_tokens"), second.size() + 1);  // end-of-text + the bytes
  EXPECT_GT(j.at("coverage").at("js_divergence_bits").get<double>(), 0.0);
  EXPECT_GE(j.at("holdout_saturated_share").get<double>(), 0.0);
  EXPECT_TRUE(j.at("layers").at(0).contains("holdout_saturated_share"));

  r = nvfp4::test::run_cli("quantize " + m + " " + (dir / "ct").string() + calib +
                           " --format compressed-tensors --scheme w4a16 --window 64");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("14 layers quantized"), std::string::npos) << r.output;
  const auto ct = nvfp4::io::Checkpoint::open((dir / "ct").string());
  const auto l = nvfp4::io::read_nvfp4_linear(ct, "model.layers.1.mlp.up_proj", nvfp4::io::QuantFormat::compressed_tensors);
  EXPECT_FALSE(l.w4a4());

  // Token shards from `nvfp4 data` (its train split) as the calibration set.
  fs::create_directories(dir / "texts");
  fs::copy_file(dir / "a.txt", dir / "texts" / "a.txt");
  fs::copy_file(dir / "b.txt", dir / "texts" / "b.txt");
  r = nvfp4::test::run_cli("data " + (dir / "texts").string() + " --out " + (dir / "data").string());
  ASSERT_EQ(r.status, 0) << r.output;
  r = nvfp4::test::run_cli("quantize " + m + " " + (dir / "sh").string() + " --calib-data " + (dir / "data").string() +
                           " --window 64 --json");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_GT(nlohmann::json::parse(r.output).at("calib_tokens").get<int64_t>(), 0);
  // A shard holds many documents: split at its end-of-text tokens and cut into --window pieces,
  // the pieces shuffled with --seed, so the calibration tokens come from several of them.
  fs::create_directories(dir / "many");
  for (int k = 0; k < 6; ++k) {
    std::ofstream(dir / "many" / ("d" + std::to_string(k) + ".txt"))
        << "document " << k << " of six: " << std::string(static_cast<size_t>(60 + 7 * k), static_cast<char>('a' + k));
  }
  r = nvfp4::test::run_cli("data " + (dir / "many").string() + " --out " + (dir / "data6").string() + " --val-fraction 0");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto calib_json = [&](const std::string& out, const std::string& seed) {
    const auto q = nvfp4::test::run_cli("quantize " + m + " " + (dir / out).string() + " --calib-data " +
                                        (dir / "data6").string() + " --scheme w4a16 --window 16 --calib-tokens 80" +
                                        seed + " --json");
    EXPECT_EQ(q.status, 0) << q.output;
    return q.status == 0 ? nlohmann::json::parse(q.output) : nlohmann::json::object();
  };
  const auto s0 = calib_json("s0", ""), s0b = calib_json("s0b", " --seed 0"), s1 = calib_json("s1", " --seed 1");
  EXPECT_EQ(s0.value("calib_tokens", 0), 80);
  EXPECT_GE(s0.value("calib_documents", 0), 3) << s0.dump();
  EXPECT_EQ(s0.value("calib_hash", ""), s0b.value("calib_hash", "x"));  // the default seed is 0
  EXPECT_NE(s0.value("calib_hash", ""), s1.value("calib_hash", ""));
  // A dataset folder as --holdout: its val split, the stream's last --holdout-tokens.
  r = nvfp4::test::run_cli("quantize " + m + " " + (dir / "hd").string() + " --calib-data " + (dir / "data6").string() +
                           " --holdout " + (dir / "data").string() + " --holdout-tokens 20 --window 16 --json");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output).at("coverage").at("holdout_tokens"), 20);
  r = nvfp4::test::run_cli("quantize " + m + " " + (dir / "hx").string() + " --calib-data " + (dir / "data").string() +
                           " --holdout " + (dir / "data6").string() + " --window 16");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("data6/manifest.json: lists no val shards"), std::string::npos) << r.output;
  // Neither option: the main job's corpus, data/python-doc, when the working directory has it.
  r = nvfp4::test::run_cli("data " + (dir / "texts").string() + " --out " + (dir / "cwd" / "data" / "python-doc").string());
  ASSERT_EQ(r.status, 0) << r.output;
  const fs::path cwd = fs::current_path();
  fs::current_path(dir / "cwd");
  r = nvfp4::test::run_cli("quantize " + m + " " + (dir / "dflt").string() + " --window 64");
  fs::current_path(cwd);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("calibrating on data/python-doc (the default corpus), its train split"), std::string::npos)
      << r.output;
  r = nvfp4::test::run_cli("quantize " + m + " " + (dir / "x").string());
  EXPECT_NE(r.output.find("give --calib FILES or --calib-data SHARDS (the default, the main job's corpus data/python-doc, "
                          "is not here"),
            std::string::npos)
      << r.output;
  r = nvfp4::test::run_cli("quantize " + m + " " + (dir / "x").string() + calib + " --calib-data " + (dir / "data").string());
  EXPECT_NE(r.output.find("not both"), std::string::npos) << r.output;

  // Mistakes: an existing model folder as OUT, an unknown rule, a bad percentile, no calibration files.
  r = nvfp4::test::run_cli("quantize " + m + " " + (dir / "ct").string() + calib);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("already holds a model"), std::string::npos) << r.output;
  r = nvfp4::test::run_cli("quantize " + m + " " + (dir / "x").string() + calib + " --scales best");
  EXPECT_NE(r.output.find("--scales best: not a scale rule (max, mse, 4over6)"), std::string::npos) << r.output;
  r = nvfp4::test::run_cli("quantize " + m + " " + (dir / "x").string() + calib + " --act-scale percentile:120");
  EXPECT_NE(r.output.find("--act-scale percentile:120"), std::string::npos) << r.output;
  r = nvfp4::test::run_cli("quantize " + m + " " + m + calib);
  EXPECT_NE(r.status, 0);
  EXPECT_FALSE(fs::exists(dir / "x"));

  // Sensitivity and BF16 fallback: held out off the calibration stream, reported, recorded.
  r = nvfp4::test::run_cli("quantize " + m + " " + (dir / "fb").string() + calib +
                           " --window 64 --device cpu --sensitivity-tokens 30 --bf16-budget 0.3 --json --report " +
                           (dir / "fb.html").string());
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string html = nvfp4::io::read_input_text((dir / "fb.html").string());
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("model.layers.1.mlp.down_proj"), std::string::npos);
  j = nlohmann::json::parse(r.output);
  const auto& s = j.at("sensitivity");
  EXPECT_EQ(s.at("scored"), 30);
  EXPECT_EQ(s.at("tokens"), "the calibration stream's last 31 tokens, not calibrated on");
  EXPECT_GT(s.at("unquantized_ppl").get<double>(), 1.0);
  EXPECT_GT(s.at("before").at("kl").get<double>(), 0.0);
  EXPECT_LE(s.at("after").at("kl").get<double>(), s.at("before").at("kl").get<double>());
  EXPECT_GT(s.at("fallback_weight_share").get<double>(), 0.0);
  EXPECT_LE(s.at("fallback_weight_share").get<double>(), 0.3);
  size_t fell = 0, measured = 0;
  for (const auto& l : j.at("layers")) {
    if (l.contains("kl")) ++measured, fell += l.at("fallback").get<bool>();
  }
  EXPECT_EQ(measured, 14u);
  EXPECT_GT(fell, 0u);
  EXPECT_EQ(j.at("quantized_layers"), 14 - fell);
  const auto fb = nvfp4::io::Checkpoint::open((dir / "fb").string());
  EXPECT_EQ(fb.metadata().at("fallback_policy").rfind("bf16-budget", 0), 0u) << fb.metadata().at("fallback_policy");
  EXPECT_EQ(nlohmann::json::parse(fb.metadata().at("sensitivity")).at("layers").size(), 14u);
  EXPECT_EQ(nlohmann::json::parse(fb.metadata().at("kept_bf16")).size(), fell + 1);
  r = nvfp4::test::run_cli("eval " + (dir / "fb").string() + " --text " + (dir / "b.txt").string() +
                           " --device cpu --reference-model " + m + " --json");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_GT(nlohmann::json::parse(r.output).at("kl_mean").get<double>(), 0.0);
  // Its mistakes.
  r = nvfp4::test::run_cli("quantize " + m + " " + (dir / "x").string() + calib + " --auto-fallback 0.05");
  EXPECT_NE(r.output.find("--sensitivity-tokens 512: holding out 513 of the"), std::string::npos) << r.output;
  r = nvfp4::test::run_cli("quantize " + m + " " + (dir / "x").string() + calib +
                           " --sensitivity-tokens 30 --auto-fallback 0.05 --bf16-budget 0.1");
  EXPECT_NE(r.output.find("give --auto-fallback or --bf16-budget, not both"), std::string::npos) << r.output;
  r = nvfp4::test::run_cli("quantize " + m + " " + (dir / "x").string() + calib + " --report " + (dir / "r.txt").string());
  EXPECT_NE(r.output.find("give a file name ending in .html"), std::string::npos) << r.output;
  r = nvfp4::test::run_cli("quantize " + m + " " + (dir / "x").string() + calib + " --bf16-budget 1.5");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("--bf16-budget"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir / "x"));
}

}  // namespace
