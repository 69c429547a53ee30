// The training loop end to end on a small byte-level corpus: learning, determinism, resume
// bit-identity, divergence handling, refused resumes, and the CLI.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
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
#include "nvfp4/checkpoint_model.hpp"
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
  o.spike_factor = 1.5;
  const auto r = nvfp4::train::train(o);
  ASSERT_TRUE(r.diverged);
  std::printf("%s\n", r.divergence.c_str());
  EXPECT_NE(r.divergence.find("diverged at step"), std::string::npos) << r.divergence;
  EXPECT_TRUE(r.divergence.find("model.") != std::string::npos || r.divergence.find("lm_head") != std::string::npos)
      << r.divergence;
  EXPECT_LT(r.history.size(), 40u);
  // The newest checkpoint is the one the message names, and it loads.
  const std::string last = nvfp4::io::latest_checkpoint(dir);
  if (!last.empty()) {
    EXPECT_NE(r.divergence.find("the last checkpoint that passed the checks is " + last), std::string::npos);
    EXPECT_NO_THROW(nvfp4::io::CheckpointReader::open(last).verify());
    EXPECT_NO_THROW(nvfp4::infer::load_checkpoint_model(last));
  }
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
  bad.model.vocab = 100;  // the byte tokenizer needs 257: an explicit --vocab below it is an error
  bad.vocab_explicit = true;
  EXPECT_THROW(nvfp4::train::train(bad), nvfp4::Error);
  auto grown = tiny_run(fresh_dir("grown"), 1);
  grown.model.vocab = 100;  // not explicit: the data's tokenizer sizes the vocabulary
  EXPECT_NO_THROW(nvfp4::train::train(grown));
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
  const auto model = nvfp4::infer::load_checkpoint_model(ckpt);
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

// ---- issue 13: divergence that used to pass, and what "last good" means ----------------------

// The largest |w| over a checkpoint's parameters (not its optimizer state); +inf for a non-finite
// value. Read raw (read_into), so it also measures what the trainer must never have written.
double max_abs_weight(const std::string& ckpt) {
  const auto r = nvfp4::io::CheckpointReader::open(ckpt);
  double m = 0;
  for (const auto& name : r.names()) {
    if (name.rfind("optimizer.", 0) == 0) continue;
    int64_t n = 1;
    for (int64_t d : r.shape(name)) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    r.read_into(name, v, r.shape(name));
    for (float x : v) m = std::isfinite(x) ? std::max(m, double(std::fabs(x))) : INFINITY;
  }
  return m;
}

// The step N of "diverged at step N" in a divergence message (-1 if absent).
int64_t divergence_step(const std::string& message) {
  const std::string key = "diverged at step ";
  const size_t at = message.find(key);
  return at == std::string::npos ? -1 : std::stoll(message.substr(at + key.size()));
}

// Every checkpoint left in `dir` is of a state the run had checked: finite, weights of the size
// training gives them, and older than the state whose checks failed (step < diverged step - 1).
void expect_only_good_checkpoints(const std::string& dir, int64_t diverged_at) {
  for (const auto& [step, path] : nvfp4::io::list_checkpoints(dir)) {
    EXPECT_LT(step, diverged_at - 1) << path << ": written for a state that failed the checks";
    EXPECT_LT(max_abs_weight(path), 100.0) << path;
  }
}

// --lr 5 (clipping on, as the CLI's default): the loss climbs to hundreds. The check is on from
// the first step, against the loss a uniform guess gives, not against a mean that diverged too.
TEST(TrainLoop, LrFiveIsCaughtAndNoDivergedStateIsCheckpointed) {
  const std::string dir = fresh_dir("lr5");
  auto o = tiny_run(dir, 40);
  o.schedule = nvfp4::train::parse_schedule("cosine", 5.0, 20, 40);  // a slow warmup: a step or two pass
  o.ckpt_every = 1;
  const auto r = nvfp4::train::train(o);
  ASSERT_TRUE(r.diverged) << "final loss " << r.history.back().loss;
  const int64_t at = divergence_step(r.divergence);
  ASSERT_GT(at, 0) << r.divergence;
  EXPECT_LE(at, 12) << r.divergence;  // caught while the loss climbs, not after 20 steps of garbage
  for (const auto& h : r.history) EXPECT_LT(h.loss, 12.0) << "step " << h.step << " passed the checks";
  expect_only_good_checkpoints(dir, at);
  const std::string last = nvfp4::io::latest_checkpoint(dir);
  ASSERT_FALSE(last.empty());
  EXPECT_NE(r.divergence.find("last checkpoint that passed the checks is " + last), std::string::npos) << r.divergence;
  EXPECT_EQ(r.last_checkpoint, last);
}

// --lr 1e6: after one update the weights are ~1e6, the activations saturate and the gradient
// vanishes; the old check saw a finite loss and checkpointed the dead model as "last good".
TEST(TrainLoop, LrMillionIsCaughtAndTheDeadModelIsNotCheckpointed) {
  const std::string dir = fresh_dir("lr1e6");
  auto o = tiny_run(dir, 20);
  o.schedule = nvfp4::train::parse_schedule("constant", 1e6, 0, 20);
  o.ckpt_every = 1;
  const auto r = nvfp4::train::train(o);
  ASSERT_TRUE(r.diverged);
  const int64_t at = divergence_step(r.divergence);
  ASSERT_GT(at, 0) << r.divergence;
  EXPECT_LE(at, 2) << r.divergence;
  expect_only_good_checkpoints(dir, at);
  EXPECT_TRUE(nvfp4::io::latest_checkpoint(dir).empty());  // no state ever passed
  EXPECT_NE(r.divergence.find("no checkpoint has passed the checks"), std::string::npos) << r.divergence;
}

// A healthy run is never flagged, here with the checks at their tightest: every step checked
// and checkpointed.
TEST(TrainLoop, HealthyRunsAreNotFlagged) {
  for (const double lr : {3e-3, 3e-2}) {
    SCOPED_TRACE(lr);
    auto o = tiny_run(fresh_dir("healthy"), 60);
    o.schedule = nvfp4::train::parse_schedule("cosine", lr, 5, 60);
    o.ckpt_every = 1;
    o.keep_checkpoints = 1;
    const auto r = nvfp4::train::train(o);
    EXPECT_FALSE(r.diverged) << r.divergence;
    EXPECT_EQ(r.history.size(), 60u);
    EXPECT_EQ(r.last_checkpoint, nvfp4::io::checkpoint_path(o.out_dir, 60));
  }
}

TEST(TrainCli, DivergedRunExitsNonZeroNamingStepAndReason) {
  const std::string dir = fresh_dir("cli_lr5");
  const auto r = nvfp4::test::run_cli("train --data " + nvfp4::test::tiny_corpus_dir() + " --out " + dir +
                                      " --preset tiny --seq-len 32 --batch 4 --steps 40 --lr 5 --no-progress");
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("nvfp4: diverged at step "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("loss"), std::string::npos) << r.output;
}

// ---- damaged checkpoints: NaN with a valid CRC, a broken train state ------------------------

// Copies checkpoint `src` to `dst`, letting `edit` change the tensors and `meta` replace metadata
// entries; the CRCs are recomputed, so the file is well formed and only its content is wrong.
void rewrite_checkpoint(const std::string& src, const std::string& dst,
                        const std::function<void(const std::string&, std::vector<float>&)>& edit,
                        const std::map<std::string, std::string>& meta = {}) {
  const auto r = nvfp4::io::CheckpointReader::open(src);
  std::vector<std::vector<float>> data;
  data.reserve(r.names().size());
  std::vector<nvfp4::io::CheckpointTensor> tensors;
  for (const auto& name : r.names()) {
    int64_t n = 1;
    for (int64_t d : r.shape(name)) n *= d;
    data.emplace_back(static_cast<size_t>(n));
    r.read_into(name, data.back(), r.shape(name));
    edit(name, data.back());
    tensors.push_back({name, r.shape(name), data.back().data()});
  }
  std::map<std::string, std::string> md;
  for (const auto& [k, v] : r.all_metadata()) {
    if (k != nvfp4::io::kCheckpointVersionKey && k != nvfp4::io::kCheckpointCrcKey && k != "format") md[k] = v;
  }
  for (const auto& [k, v] : meta) md[k] = v;
  nvfp4::io::write_checkpoint(dst + ".new", tensors, md);
  fs::rename(dst + ".new", dst);
}

constexpr const char* kPoisoned = "model.layers.1.mlp.up_proj.weight";

// Under a recipe, NaN reaches a quantizer before the gradient norm sees it: still a divergence
// that names the layer and operand, not a crash. Here from weights near FP32's maximum in the
// quantized layer 1 (finite, so the checkpoint loads): q_proj and k_proj overflow to inf, the
// attention scores become NaN, and the o_proj operand quantizer meets them.
TEST(TrainLoop, NonFiniteQuantizerInputIsADivergence) {
  const std::string dir = fresh_dir("diverge_q");
  auto o = tiny_run(dir, 4);
  o.model.n_layer = 4;
  o.recipe = nvfp4::recipe::preset("nvfp4", 4);
  o.ckpt_every = 2;
  nvfp4::train::train(o);
  const std::string ck2 = nvfp4::io::checkpoint_path(dir, 2);
  fs::remove(nvfp4::io::checkpoint_path(dir, 4));
  rewrite_checkpoint(ck2, ck2, [](const std::string& name, std::vector<float>& v) {
    if (name.rfind("model.layers.1.self_attn.", 0) == 0) std::fill(v.begin(), v.end(), 3e38f);
  });
  o.resume = true;
  const auto r = nvfp4::train::train(o);
  ASSERT_TRUE(r.diverged);
  EXPECT_NE(r.divergence.find("diverged at step 3"), std::string::npos) << r.divergence;
  EXPECT_NE(r.divergence.find("non-finite values in a quantized GEMM operand: layer "), std::string::npos)
      << r.divergence;  // names the layer, the GEMM and the operand
  EXPECT_NE(r.divergence.find("the checkpoint this run resumed from, " + ck2 + ", holds the state that failed"),
            std::string::npos)
      << r.divergence;
}

std::string train_args(const std::string& dir) {
  return "train --data " + nvfp4::test::tiny_corpus_dir() + " --out " + dir +
         " --preset tiny --seq-len 32 --batch 4 --steps 8 --ckpt-every 4 --no-progress";
}

TEST(TrainCli, CheckpointWithNaNParametersIsRefusedEverywhere) {
  const std::string dir = fresh_dir("nan_ckpt");
  auto r = nvfp4::test::run_cli(train_args(dir));
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string ck4 = nvfp4::io::checkpoint_path(dir, 4), ck8 = nvfp4::io::checkpoint_path(dir, 8);
  rewrite_checkpoint(ck8, ck8, [](const std::string& name, std::vector<float>& v) {
    if (name == kPoisoned) v[5] = NAN;
  });
  ASSERT_NO_THROW(nvfp4::io::CheckpointReader::open(ck8).verify());  // the CRCs are valid
  const std::string bad = std::string(kPoisoned) + "': element 5 is nan";
  r = nvfp4::test::run_cli("sample " + ck8 + " --prompt 'The model' --tokens 4");
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find(ck8), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(bad), std::string::npos) << r.output;
  r = nvfp4::test::run_cli("export-hf " + ck8 + " " + fresh_dir("nan_hf"));
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find(bad), std::string::npos) << r.output;

  // --resume does not train on from it: it says why and falls back to the one before.
  r = nvfp4::test::run_cli(train_args(dir) + " --resume --json");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("warning: " + ck8), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(bad), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("resuming from " + ck4 + " instead"), std::string::npos) << r.output;
  const auto j = nlohmann::json::parse(r.output.substr(r.output.find("{\n")));
  EXPECT_EQ(j.at("steps").get<int>(), 8);
  EXPECT_LT(max_abs_weight(ck8), 100.0);  // rewritten by the resumed run
}

TEST(TrainCli, CorruptTrainStateNamesTheFileAndTheFallback) {
  const std::string dir = fresh_dir("bad_state");
  auto r = nvfp4::test::run_cli(train_args(dir));
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string ck4 = nvfp4::io::checkpoint_path(dir, 4), ck8 = nvfp4::io::checkpoint_path(dir, 8);
  const auto keep = [](const std::string&, std::vector<float>&) {};
  const std::string good8 = fresh_dir("bad_state_ck8");
  fs::copy_file(ck8, good8);
  // Not JSON, and JSON without a key the resume needs: each falls back with a warning.
  auto run = nlohmann::json::parse(nvfp4::io::CheckpointReader::open(ck8).metadata("nvfp4.run"));
  run.erase("seed");
  for (const auto& [key, value] : std::map<std::string, std::string>{
           {"nvfp4.train_state", "{\"step\": 8, \"tokens\""}, {"nvfp4.run", run.dump()}}) {
    SCOPED_TRACE(key);
    rewrite_checkpoint(good8, ck8, keep, {{key, value}});
    r = nvfp4::test::run_cli(train_args(dir) + " --resume");
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("warning: " + ck8 + ": checkpoint metadata '" + key + "'"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("resuming from " + ck4 + " instead"), std::string::npos) << r.output;
  }

  // With no older checkpoint to fall back to: an error naming the file, the entry and what to do.
  rewrite_checkpoint(ck8, ck8, keep, {{"nvfp4.train_state", "{\"step\": 8}"}});
  fs::remove(ck4);
  r = nvfp4::test::run_cli(train_args(dir) + " --resume");
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_EQ(r.output.find("internal error"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(ck8 + ": checkpoint metadata 'nvfp4.train_state' has no \"tokens\""), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("no older checkpoint"), std::string::npos) << r.output;
}

// ---- compare and report ----------------------------------------------------------------------

nlohmann::json last_json(const std::string& output) { return nlohmann::json::parse(output.substr(output.rfind("\n{") + 1)); }

std::string compare_args(const std::string& out, const std::string& recipes) {
  return "compare --data " + nvfp4::test::tiny_corpus_dir() + " --out " + out +
         " --preset tiny --layers 4 --seq-len 32 --batch 4 --steps 8 --val-every 4 --ckpt-every 4 --recipes " +
         recipes + " --no-progress --json";
}

TEST(TrainCli, CompareResumeReportsTheWholeRuns) {
  const std::string out = fresh_dir("cmp_resume");
  auto r = nvfp4::test::run_cli(compare_args(out, "bf16,nvfp4"));
  ASSERT_EQ(r.status, 0) << r.output;
  const auto first = last_json(r.output);
  // bf16 finished; nvfp4 was "interrupted" after its checkpoint at step 4.
  fs::remove(nvfp4::io::checkpoint_path((fs::path(out) / "nvfp4-seed1").string(), 8));
  r = nvfp4::test::run_cli(compare_args(out, "bf16,nvfp4") + " --resume");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto again = last_json(r.output);
  ASSERT_EQ(again.at("recipes").size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(i);
    ASSERT_TRUE(again.at("recipes")[i].at("final_val_mean").is_number()) << again.dump();
    EXPECT_EQ(again.at("recipes")[i].at("final_val_mean"), first.at("recipes")[i].at("final_val_mean"));
  }
  std::ifstream f(fs::path(out) / "summary.json");
  EXPECT_EQ(nlohmann::json::parse(f), again);
}

TEST(TrainCli, CompareWithADivergedRunWritesTheReportAndExitsNonZero) {
  const std::string out = fresh_dir("cmp_diverged");
  const auto r = nvfp4::test::run_cli(compare_args(out, "bf16,nvfp4") + " --lr 5");
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("nvfp4: 2 of 2 runs diverged (the report shows them):\n  bf16 (seed 1): diverged at step "),
            std::string::npos)
      << r.output;
  std::ifstream f(fs::path(out) / "summary.json");
  const auto j = nlohmann::json::parse(f);
  for (const auto& x : j.at("recipes")) EXPECT_EQ(x.at("diverged_runs").get<int>(), 1) << x.at("recipe");
}

TEST(TrainCli, CompareRefusesARecipeListedTwiceBeforeTraining) {
  const std::string out = fresh_dir("cmp_twice");
  const auto r = nvfp4::test::run_cli(compare_args(out, "bf16,nvfp4,bf16"));
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("--recipes lists \"bf16\" twice"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(fs::path(out) / "bf16-seed1")) << "trained before refusing";
}

TEST(TrainCli, ReportCountsARunOnceHoweverItIsNamed) {
  const std::string dir = fresh_dir("report_once");
  auto r = nvfp4::test::run_cli("train --data " + nvfp4::test::tiny_corpus_dir() + " --out " + dir +
                                " --preset tiny --seq-len 32 --batch 2 --steps 2 --no-progress");
  ASSERT_EQ(r.status, 0) << r.output;
  r = nvfp4::test::run_cli("report " + dir + " " + dir + "/ " + dir + "/../" + fs::path(dir).filename().string() +
                           " --out " + fresh_dir("report_once_out") + " --json");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto j = last_json(r.output);
  ASSERT_EQ(j.at("recipes").size(), 1u);
  EXPECT_EQ(j.at("recipes")[0].at("seeds").get<int>(), 1) << r.output;
}

TEST(TrainCli, ReportNamesTheRunFileMissingAKey) {
  const std::string dir = fresh_dir("report_nokey");
  auto r = nvfp4::test::run_cli("train --data " + nvfp4::test::tiny_corpus_dir() + " --out " + dir +
                                " --preset tiny --seq-len 32 --batch 2 --steps 2 --no-progress");
  ASSERT_EQ(r.status, 0) << r.output;
  const fs::path run = fs::path(dir) / "run.json";
  nlohmann::json j;
  {
    std::ifstream f(run);
    j = nlohmann::json::parse(f);
  }
  for (const char* key : {"seed", "precision", "model"}) {
    SCOPED_TRACE(key);
    auto k = j;
    k.erase(key);
    std::ofstream(run) << k.dump(2);
    r = nvfp4::test::run_cli("report " + dir + " --out " + fresh_dir("report_nokey_out"));
    EXPECT_NE(r.status, 0) << r.output;
    EXPECT_EQ(r.output.find("internal error"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(run.string() + ": "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(std::string("\"") + key + "\""), std::string::npos) << r.output;
  }
}

}  // namespace
