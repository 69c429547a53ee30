// The training loop end to end on a small byte-level corpus: learning, determinism, resume
// bit-identity, divergence handling, refused resumes, and the CLI.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "nvfp4/checkpoint.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/safetensors.hpp"
#include "nvfp4/token_shards.hpp"
#include "support/test_support.hpp"
#include "support/tiny_corpus.hpp"
#include "train/trainer.hpp"

namespace {

namespace fs = std::filesystem;

nvfp4::train::TrainOptions tiny_run(const std::string& out, int64_t steps) {
  nvfp4::train::TrainOptions o;
  o.data_dir = nvfp4::test::tiny_corpus_dir();
  o.out_dir = out;
  o.model = nvfp4::train::model_preset("tiny");
  o.model.seq_len = 32;
  o.batch = 4;
  o.steps = steps;
  o.schedule = nvfp4::train::parse_schedule("cosine", 3e-3, std::min<int64_t>(5, steps), steps);
  o.val_every = 10;
  o.val_batches = 2;
  o.progress = false;
  o.threads = 2;
  return o;
}

std::string fresh_dir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("nvfp4_train_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p.string();
}

std::vector<double> losses(const nvfp4::train::TrainResult& r) {
  std::vector<double> l;
  for (const auto& h : r.history) l.push_back(h.loss);
  return l;
}

TEST(TrainLoop, LearnsBelowTheUnigramBaseline) {
  auto o = tiny_run(fresh_dir("learn"), 60);
  const auto r = nvfp4::train::train(o);
  ASSERT_EQ(r.history.size(), 60u);
  EXPECT_FALSE(r.diverged) << r.divergence;
  const double val = r.history.back().val_loss;
  EXPECT_GT(r.unigram_val_loss, 2.0);
  EXPECT_LT(val, r.unigram_val_loss - 0.5) << "val " << val << " unigram " << r.unigram_val_loss;
  EXPECT_TRUE(fs::exists(r.last_checkpoint));
  // One JSON line per step with the documented fields.
  std::ifstream f(r.metrics_path);
  std::string line;
  int n = 0;
  while (std::getline(f, line)) {
    const auto j = nlohmann::json::parse(line);
    for (const char* k : {"step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s", "step_ms", "peak_mem_bytes"}) {
      EXPECT_TRUE(j.contains(k)) << k << " missing in " << line;
    }
    ++n;
  }
  EXPECT_EQ(n, 60);
}

TEST(TrainLoop, SameSeedGivesTheSameLossesBitForBit) {
  const auto a = nvfp4::train::train(tiny_run(fresh_dir("det_a"), 15));
  const auto b = nvfp4::train::train(tiny_run(fresh_dir("det_b"), 15));
  EXPECT_EQ(losses(a), losses(b));
  auto other = tiny_run(fresh_dir("det_c"), 15);
  other.seed = 2;
  EXPECT_NE(losses(nvfp4::train::train(other)), losses(a));
}

TEST(TrainLoop, ResumeContinuesBitIdentically) {
  const auto whole = nvfp4::train::train(tiny_run(fresh_dir("whole"), 16));
  const std::string dir = fresh_dir("resumed");
  auto o = tiny_run(dir, 16);
  o.ckpt_every = 8;
  nvfp4::train::train(o);
  // "Interrupt" after step 8: drop the final checkpoint and the metrics after step 8 remain.
  fs::remove(nvfp4::io::checkpoint_path(dir, 16));
  ASSERT_EQ(nvfp4::io::latest_checkpoint(dir), nvfp4::io::checkpoint_path(dir, 8));
  o.resume = true;
  const auto rest = nvfp4::train::train(o);
  ASSERT_EQ(rest.history.size(), 8u);
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(rest.history[i].step, whole.history[8 + i].step);
    EXPECT_EQ(rest.history[i].loss, whole.history[8 + i].loss) << "step " << rest.history[i].step;
    EXPECT_EQ(rest.history[i].tokens, whole.history[8 + i].tokens);
  }
  EXPECT_EQ(rest.history.back().val_loss, whole.history.back().val_loss);
  // The metrics file holds each step once.
  std::ifstream f(rest.metrics_path);
  std::string line;
  std::vector<int64_t> steps;
  while (std::getline(f, line)) steps.push_back(nlohmann::json::parse(line).at("step").get<int64_t>());
  ASSERT_EQ(steps.size(), 16u);
  for (size_t i = 0; i < steps.size(); ++i) EXPECT_EQ(steps[i], int64_t(i + 1));
}

TEST(TrainLoop, DivergenceStopsNamesTheTensorAndKeepsTheLastCheckpoint) {
  const std::string dir = fresh_dir("diverge");
  auto o = tiny_run(dir, 40);
  o.schedule = nvfp4::train::parse_schedule("constant", 30.0, 0, 40);  // far too large
  o.grad_clip = 0;
  o.ckpt_every = 1;
  o.spike_warmup = 2;
  o.spike_factor = 1.5;
  const auto r = nvfp4::train::train(o);
  ASSERT_TRUE(r.diverged);
  std::printf("%s\n", r.divergence.c_str());
  EXPECT_NE(r.divergence.find("diverged at step"), std::string::npos) << r.divergence;
  EXPECT_TRUE(r.divergence.find("model.") != std::string::npos || r.divergence.find("lm_head") != std::string::npos)
      << r.divergence;
  EXPECT_LT(r.history.size(), 40u);
  // The newest checkpoint is the last good step, and it loads.
  const std::string last = nvfp4::io::latest_checkpoint(dir);
  ASSERT_FALSE(last.empty());
  EXPECT_EQ(last, nvfp4::io::checkpoint_path(dir, static_cast<int64_t>(r.history.size())));
  EXPECT_NO_THROW(nvfp4::io::CheckpointReader::open(last).verify());
}

// Issue 5: a short run of every preset is stable on the CPU, and the recipe is recorded.
TEST(TrainLoop, EveryRecipePresetTrainsStably) {
  for (const char* name : {"bf16", "fp8", "fp8-block", "nvfp4", "mxfp4", "mxfp4-ocp"}) {
    SCOPED_TRACE(name);
    auto o = tiny_run(fresh_dir(std::string("recipe_") + name), 12);
    o.model.n_layer = 4;  // nvfp4's BF16 blocks are the first 1 and last 2: layer 1 is quantized
    o.recipe = nvfp4::recipe::preset(name, o.model.n_layer);
    const auto r = nvfp4::train::train(o);
    ASSERT_FALSE(r.diverged) << r.divergence;
    ASSERT_EQ(r.history.size(), 12u);
    for (const auto& h : r.history) EXPECT_TRUE(std::isfinite(h.loss) && std::isfinite(h.grad_norm));
    EXPECT_LT(r.history.back().val_loss, r.history.front().loss);
    const auto ck = nvfp4::io::CheckpointReader::open(r.last_checkpoint);
    EXPECT_EQ(nvfp4::recipe::from_json(ck.metadata("nvfp4.recipe")), *o.recipe);
  }
}

// Under a recipe, NaN reaches a quantizer before the gradient norm sees it: still a divergence
// that names the layer and operand, not a crash.
TEST(TrainLoop, NonFiniteQuantizerInputIsADivergence) {
  const std::string dir = fresh_dir("diverge_q");
  auto o = tiny_run(dir, 40);
  o.model.n_layer = 4;
  o.recipe = nvfp4::recipe::preset("nvfp4", 4);
  o.schedule = nvfp4::train::parse_schedule("constant", 1e4, 0, 40);  // absurd: overflows to Inf/NaN
  o.grad_clip = 0;
  o.spike_factor = 1e30;  // let it run into non-finite values instead of stopping at a spike
  const auto r = nvfp4::train::train(o);
  ASSERT_TRUE(r.diverged);
  EXPECT_NE(r.divergence.find("diverged at step"), std::string::npos) << r.divergence;
  EXPECT_NE(r.divergence.find("non-finite values in a quantized GEMM operand: layer "), std::string::npos)
      << r.divergence;  // names the layer, the GEMM and the operand
}

TEST(TrainLoop, RefusesMismatchedResumeAndOverwritingARun) {
  const std::string dir = fresh_dir("refuse");
  auto o = tiny_run(dir, 4);
  nvfp4::train::train(o);
  EXPECT_THROW(nvfp4::train::train(o), nvfp4::Error);  // checkpoints exist, no --resume
  o.resume = true;
  o.batch = 8;
  try {
    nvfp4::train::train(o);
    ADD_FAILURE() << "resumed with another batch size";
  } catch (const nvfp4::Error& e) {
    EXPECT_NE(std::string(e.what()).find("batch"), std::string::npos) << e.what();
  }
  auto bad = tiny_run(fresh_dir("bad"), 4);
  bad.model.vocab = 100;  // the byte tokenizer needs 257
  EXPECT_THROW(nvfp4::train::train(bad), nvfp4::Error);
  bad = tiny_run(fresh_dir("bad2"), 4);
  bad.data_dir = "/nonexistent/data";
  EXPECT_THROW(nvfp4::train::train(bad), nvfp4::Error);
}

std::string run_cli(const std::string& args, int* status) {
  const auto r = nvfp4::test::run_cli(args);
  *status = r.status;
  return r.output;
}

TEST(TrainCli, TrainsAndReportsJson) {
  int status = 0;
  const std::string out = run_cli("train --data " + nvfp4::test::tiny_corpus_dir() + " --out " + fresh_dir("cli") +
                                      " --preset tiny --seq-len 32 --batch 4 --steps 6 --no-progress --json",
                                  &status);
  ASSERT_EQ(status, 0) << out;
  const auto j = nlohmann::json::parse(out.substr(out.find("{\n")));
  EXPECT_EQ(j.at("steps").get<int>(), 6);
  EXPECT_FALSE(j.at("diverged").get<bool>());
  EXPECT_TRUE(fs::exists(j.at("checkpoint").get<std::string>()));
  const std::string err = run_cli("train --data " + nvfp4::test::tiny_corpus_dir() + " --out " + fresh_dir("cli2") + " --preset huge",
                                  &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(err.find("--preset huge"), std::string::npos) << err;
}

TEST(TrainCli, CompareTrainsEveryRecipeAndWritesTheReport) {
  int status = 0;
  const std::string out = fresh_dir("compare");
  const std::string o = run_cli("compare --data " + nvfp4::test::tiny_corpus_dir() + " --out " + out +
                                    " --preset tiny --layers 4 --seq-len 32 --batch 4 --steps 8 --val-every 4"
                                    " --recipes bf16,nvfp4,nvfp4:no-rht --seeds 2 --no-progress --json",
                                &status);
  ASSERT_EQ(status, 0) << o;
  const auto j = nlohmann::json::parse(o.substr(o.rfind("\n{") + 1));  // the last line; progress went first
  ASSERT_EQ(j.at("recipes").size(), 3u);
  EXPECT_EQ(j.at("recipes")[0].at("recipe"), "bf16");
  EXPECT_EQ(j.at("recipes")[1].at("recipe"), "nvfp4");
  EXPECT_EQ(j.at("recipes")[2].at("recipe"), "nvfp4:no-rht");
  EXPECT_EQ(j.at("recipes")[1].at("seeds").get<int>(), 2);
  EXPECT_TRUE(j.at("recipes")[1].at("gap_percent").is_number());  // against bf16
  std::ifstream f(fs::path(out) / "report.html");
  std::stringstream html;
  html << f.rdbuf();
  for (const char* needle : {"<svg", "bf16", "nvfp4:no-rht"}) EXPECT_NE(html.str().find(needle), std::string::npos) << needle;
  EXPECT_TRUE(fs::exists(fs::path(out) / "summary.json"));
  EXPECT_TRUE(fs::exists(fs::path(out) / "nvfp4-seed2" / "metrics.jsonl"));

  // nvfp4 report draws the same runs back from disk into the same summary.
  const std::string redrawn = fresh_dir("report");
  const std::string r = run_cli("report " + out + " --out " + redrawn + " --json", &status);
  ASSERT_EQ(status, 0) << r;
  const auto k = nlohmann::json::parse(r.substr(r.rfind("\n{") + 1));
  ASSERT_EQ(k.at("recipes").size(), 3u);
  std::map<std::string, double> want;
  for (const auto& x : j.at("recipes")) want[x.at("recipe")] = x.at("final_val_mean").get<double>();
  for (const auto& x : k.at("recipes")) {
    EXPECT_EQ(x.at("final_val_mean").get<double>(), want.at(x.at("recipe"))) << x.at("recipe");
    EXPECT_EQ(x.at("seeds").get<int>(), 2);
  }
  EXPECT_EQ(k.at("unigram_val_loss"), j.at("unigram_val_loss"));
  EXPECT_TRUE(fs::exists(fs::path(redrawn) / "report.html"));

  const std::string bad = run_cli("compare --data " + nvfp4::test::tiny_corpus_dir() + " --out " + fresh_dir("cmp2") +
                                      " --preset tiny --recipes nvfp4:no-fp4",
                                  &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(bad.find("unknown switch \"no-fp4\""), std::string::npos) << bad;
}

TEST(TrainCli, ReportRefusesFoldersWithoutRunsAndRunsOfDifferentModels) {
  int status = 0;
  const std::string empty = fresh_dir("report_empty");
  fs::create_directories(empty);
  std::string o = run_cli("report " + empty + " --out " + fresh_dir("report_out1"), &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(o.find("holds no training folder"), std::string::npos) << o;

  const std::string a = fresh_dir("report_a"), b = fresh_dir("report_b");
  for (const auto& [dir, layers] : {std::pair{a, 2}, std::pair{b, 3}}) {
    run_cli("train --data " + nvfp4::test::tiny_corpus_dir() + " --out " + dir + " --preset tiny --layers " +
                std::to_string(layers) + " --seq-len 32 --batch 2 --steps 2 --no-progress",
            &status);
    ASSERT_EQ(status, 0);
  }
  o = run_cli("report " + a + " " + b + " --out " + fresh_dir("report_out2"), &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(o.find("runs of different models cannot share a report"), std::string::npos) << o;

  // A damaged metrics line is named by file and line.
  std::ofstream(fs::path(a) / "metrics.jsonl", std::ios::app) << "{\"step\": 3, \"loss\": \"x\"}\n{}\n";
  o = run_cli("report " + a + " --out " + fresh_dir("report_out3"), &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(o.find("metrics.jsonl:"), std::string::npos) << o;
}

TEST(TrainCli, SampleAndExportHuggingFace) {
  int status = 0;
  const std::string run_dir = fresh_dir("cli_use");
  run_cli("train --data " + nvfp4::test::tiny_corpus_dir() + " --out " + run_dir + " --preset tiny --seq-len 32 --batch 4 --steps 8 --no-progress",
          &status);
  ASSERT_EQ(status, 0);
  const std::string ckpt = nvfp4::io::latest_checkpoint(run_dir);
  ASSERT_FALSE(ckpt.empty());

  const std::string s1 = run_cli("sample " + ckpt + " --prompt 'The model' --tokens 12 --seed 3 --json", &status);
  ASSERT_EQ(status, 0) << s1;
  const auto j1 = nlohmann::json::parse(s1.substr(s1.find("{\n")));
  EXPECT_GT(j1.at("tokens").get<int>(), 0);
  const std::string s2 = run_cli("sample " + ckpt + " --prompt 'The model' --tokens 12 --seed 3 --json", &status);
  EXPECT_EQ(nlohmann::json::parse(s2.substr(s2.find("{\n"))).at("completion"), j1.at("completion"))
      << "same seed, same text";

  const std::string out = fresh_dir("hf");
  const std::string e = run_cli("export-hf " + ckpt + " " + out, &status);
  ASSERT_EQ(status, 0) << e;
  std::ifstream cf(fs::path(out) / "config.json");
  const auto cfg = nlohmann::json::parse(cf);
  EXPECT_EQ(cfg.at("model_type"), "llama");
  EXPECT_EQ(cfg.at("hidden_size").get<int>(), 64);
  EXPECT_EQ(cfg.at("num_key_value_heads").get<int>(), 1);
  EXPECT_EQ(cfg.at("vocab_size").get<int>(), 257);
  EXPECT_FALSE(cfg.at("tie_word_embeddings").get<bool>());
  const auto st = nvfp4::io::SafetensorsFile::open((fs::path(out) / "model.safetensors").string());
  const auto model = nvfp4::train::load_checkpoint_model(ckpt);
  for (const auto& spec : model.specs()) {
    const auto* t = st.find(spec.name);
    ASSERT_NE(t, nullptr) << spec.name;
    EXPECT_EQ(t->dtype, nvfp4::DType::BF16) << spec.name;
    EXPECT_EQ(t->shape, spec.shape) << spec.name;
  }
  EXPECT_TRUE(fs::exists(fs::path(out) / "nvfp4_reference_logits.safetensors"));
  // A second export into the same folder is refused without --force.
  const std::string again = run_cli("export-hf " + ckpt + " " + out, &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(again.find("--force"), std::string::npos) << again;
}

}  // namespace
