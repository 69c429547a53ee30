// The training loop (see trainer.hpp). CPU backend: the FP32 reference model.
#include "train/trainer.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "kernels/cpu/ops.hpp"
#if NVFP4_HAVE_CUDA
#include "nvfp4/cuda_runtime_info.hpp"
#include "nvfp4/model_cuda.hpp"
#endif
#include "nvfp4/checkpoint.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/quantized_linear.hpp"
#include "nvfp4/safetensors.hpp"
#include "nvfp4/token_shards.hpp"
#include "nvfp4/tokenizer.hpp"
#include "train/metrics.hpp"

namespace nvfp4::train {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

int64_t peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;  // Linux reports KiB
}

// The options that fix the data order and the optimizer: a resumed run must match them.
nlohmann::ordered_json run_json(const TrainOptions& o) {
  nlohmann::ordered_json j;
  j["data_dir"] = o.data_dir;
  j["device"] = o.device;
  j["model"] = nlohmann::json::parse(o.model.to_json());
  j["batch"] = o.batch;
  j["seq_len"] = o.model.seq_len;
  j["grad_accum"] = o.grad_accum;
  j["steps"] = o.steps;
  j["schedule"] = nlohmann::json::parse(o.schedule.to_json_string());
  j["weight_decay"] = o.weight_decay;
  j["beta1"] = o.beta1;
  j["beta2"] = o.beta2;
  j["eps"] = o.eps;
  j["grad_clip"] = o.grad_clip;
  j["val_every"] = o.val_every;
  j["val_batches"] = o.val_batches;
  j["seed"] = o.seed;
  j["spike_factor"] = o.spike_factor;
  j["precision"] = o.recipe ? nlohmann::json::parse(recipe::to_json(*o.recipe)) : nlohmann::json("fp32");
  return j;
}

void validate(const TrainOptions& o) {
  o.model.validate();
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw Error(what);
  };
  need(o.batch >= 1, "--batch must be >= 1");
  need(o.grad_accum >= 1, "--grad-accum must be >= 1");
  need(o.steps >= 1, "--steps must be >= 1");
  need(o.val_batches >= 1, "--val-batches must be >= 1");
  need(o.val_every >= 0 && o.ckpt_every >= 0, "--val-every and --ckpt-every must be >= 0");
  need(o.grad_clip >= 0, "--grad-clip must be >= 0 (0 turns clipping off)");
  need(o.weight_decay >= 0, "--weight-decay must be >= 0");
  need(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1, "--beta1/--beta2 must be in [0, 1)");
  need(o.spike_factor > 1, "--spike-factor must be > 1");
  need(o.loss_ceiling_factor > 1 && o.weight_growth_factor > 1, "the divergence factors must be > 1");
  need(o.keep_checkpoints >= 1, "--keep-checkpoints must be >= 1");
  need(!o.out_dir.empty(), "--out is required: the folder for metrics and checkpoints");
}

// Cross-entropy (nats) of the validation tokens under the training data's unigram distribution
// (add-one smoothing): the loss a model that ignores context reaches.
double unigram_baseline(const io::ShardLoader& train, const io::ShardLoader& val, int vocab) {
  std::vector<double> count(static_cast<size_t>(vocab), 1.0);
  double total = vocab;
  for (const auto& s : train.shards()) {
    for (const int32_t t : s.tokens()) count[t] += 1.0;
    total += static_cast<double>(s.size());
  }
  double nll = 0;
  int64_t n = 0;
  for (const auto& s : val.shards()) {
    for (const int32_t t : s.tokens()) nll -= std::log(count[t] / total);
    n += s.size();
  }
  return n ? nll / static_cast<double>(n) : 0.0;
}

// Splits a (B, T+1) window into inputs and targets (B, T).
void split_window(const std::vector<int32_t>& w, int B, int T, std::vector<int32_t>& in, std::vector<int32_t>& tgt) {
  in.resize(size_t(B) * T);
  tgt.resize(size_t(B) * T);
  for (int b = 0; b < B; ++b) {
    const int32_t* row = w.data() + size_t(b) * (T + 1);
    std::copy(row, row + T, in.data() + size_t(b) * T);
    std::copy(row + 1, row + T + 1, tgt.data() + size_t(b) * T);
  }
}

std::string layer_of(const std::string& name) {
  const std::string key = "model.layers.";
  if (name.rfind(key, 0) == 0) return "layer " + name.substr(key.size(), name.find('.', key.size()) - key.size());
  return name.rfind("lm_head", 0) == 0 || name == "model.norm.weight" ? "the output head" : "the embedding";
}

// Checkpoint metadata: the tokenizer's description (Tokenizer::describe(); a bare name in
// checkpoints written before it) and the dataset the run trains on.
constexpr const char* kTokenizerKey = io::kCheckpointTokenizerKey;
constexpr const char* kDatasetKey = "nvfp4.dataset";

std::string dataset_json(const io::TokenDataset& d) {
  return nlohmann::ordered_json{{"dir", d.dir}, {"identity", d.identity}}.dump();
}

// --resume on another dataset would continue at the saved loader position in other data.
// Checkpoints written before the identity was recorded are not checked.
void check_same_dataset(const io::CheckpointReader& ck, const io::TokenDataset& now) {
  if (!ck.has_metadata(kDatasetKey)) return;
  const auto saved = nlohmann::json::parse(ck.metadata(kDatasetKey), nullptr, /*allow_exceptions=*/false);
  const auto* identity = saved.is_object() && saved.contains("identity") ? saved["identity"].get_ptr<const std::string*>()
                                                                         : nullptr;
  if (identity == nullptr) {
    throw Error(ck.path() + ": metadata " + kDatasetKey + " is not {\"dir\", \"identity\"}; the checkpoint is corrupt");
  }
  if (*identity != now.identity) {
    const std::string dir = saved.value("dir", std::string("?"));
    throw Error("--resume: " + ck.path() + " was trained on the dataset in " + dir + " (identity " + *identity +
                "), but --data " + now.dir + " is another dataset (identity " + now.identity +
                "); pass the original --data " + dir + " to continue, or start a new run with a new --out");
  }
}

struct TrainState {
  int64_t step = 0, tokens = 0;
  io::LoaderPosition position;
  double loss_mean = 0;   // running mean of the loss for spike detection
  double first_loss = 0;  // the run's first loss (0: not known), for the loss ceiling
};

nlohmann::ordered_json state_json(const TrainState& s) {
  nlohmann::ordered_json j;
  j["step"] = s.step;
  j["tokens"] = s.tokens;
  j["loader"] = {{"shard", s.position.shard}, {"offset", s.position.offset}, {"epoch", s.position.epoch}};
  // NOTE: %.17g round-trips a double exactly; nlohmann writes doubles that way.
  j["loss_mean"] = s.loss_mean;
  j["first_loss"] = s.first_loss;
  return j;
}

// ---- reading a checkpoint back -------------------------------------------------------------------

// Metadata entry `key` of a checkpoint as a JSON object; nvfp4::Error naming file and entry.
nlohmann::json metadata_object(const io::CheckpointReader& ck, const char* key) {
  const auto j = nlohmann::json::parse(ck.metadata(key), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    throw Error(ck.path() + ": checkpoint metadata '" + key + "' is not a JSON object; the checkpoint is damaged");
  }
  return j;
}

// j[field] of metadata entry `key`, present and a number (an integer if `integer`).
const nlohmann::json& number_field(const io::CheckpointReader& ck, const char* key, const nlohmann::json& j,
                                   const char* field, bool integer) {
  const auto it = j.find(field);
  if (it == j.end()) {
    throw Error(ck.path() + ": checkpoint metadata '" + key + "' has no \"" + field + "\"; the checkpoint is damaged");
  }
  if (integer ? !it->is_number_integer() : !it->is_number()) {
    throw Error(ck.path() + ": checkpoint metadata '" + key + "': \"" + field + "\" is " + it->dump() + ", expected " +
                (integer ? "an integer" : "a number") + "; the checkpoint is damaged");
  }
  return *it;
}

// The run.json keys a resumed run must match (the data order and the optimizer depend on them).
constexpr const char* kResumeKeys[] = {"model", "batch", "seq_len", "grad_accum", "steps", "schedule", "weight_decay",
                                       "beta1", "beta2", "eps", "grad_clip", "seed", "precision"};

// What --resume takes from a checkpoint, read whole and checked before the run uses any of it.
struct Resumed {
  nlohmann::json run;  // "nvfp4.run": the options it was written with
  TrainState state;
};

// Reads checkpoint `path` into params / adam_m / adam_v (param_specs order). Throws nvfp4::Error
// naming the file and the entry or tensor for anything unreadable, damaged or non-finite.
Resumed read_resume_checkpoint(const std::string& path, const std::vector<model::ParamSpec>& specs,
                               std::span<float> params, std::span<float> adam_m, std::span<float> adam_v) {
  const io::CheckpointReader ck = io::CheckpointReader::open(path);
  Resumed r;
  r.run = metadata_object(ck, "nvfp4.run");
  for (const char* key : kResumeKeys) {
    if (!r.run.contains(key)) {
      throw Error(path + ": checkpoint metadata 'nvfp4.run' has no \"" + key + "\"; the checkpoint is damaged");
    }
  }
  const char* state_key = "nvfp4.train_state";
  const auto js = metadata_object(ck, state_key);
  TrainState& st = r.state;
  st.step = number_field(ck, state_key, js, "step", true).get<int64_t>();
  st.tokens = number_field(ck, state_key, js, "tokens", true).get<int64_t>();
  const auto loader = js.find("loader");
  if (loader == js.end() || !loader->is_object()) {
    throw Error(path + ": checkpoint metadata '" + state_key + "' has no \"loader\" object; the checkpoint is damaged");
  }
  st.position = {number_field(ck, state_key, *loader, "shard", true).get<int64_t>(),
                 number_field(ck, state_key, *loader, "offset", true).get<int64_t>(),
                 number_field(ck, state_key, *loader, "epoch", true).get<int64_t>()};
  st.loss_mean = number_field(ck, state_key, js, "loss_mean", false).get<double>();
  if (js.contains("first_loss")) st.first_loss = number_field(ck, state_key, js, "first_loss", false).get<double>();
  for (const auto& s : specs) {
    ck.read_finite_into(s.name, params.subspan(s.offset, s.numel), s.shape);
    ck.read_finite_into("optimizer.m." + s.name, adam_m.subspan(s.offset, s.numel), s.shape);
    ck.read_finite_into("optimizer.v." + s.name, adam_v.subspan(s.offset, s.numel), s.shape);
  }
  return r;
}

// ---- divergence --------------------------------------------------------------------------------

// A number as a message shows it: 6 significant digits ("46.5394", "1.00925e+16", "nan").
std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

// The largest |w| over `params` and the index of the spec holding it; +inf at a non-finite weight.
std::pair<double, size_t> largest_weight(std::span<const float> params, const std::vector<model::ParamSpec>& specs) {
  double worst = 0;
  size_t where = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    for (const float w : params.subspan(specs[i].offset, specs[i].numel)) {
      if (!std::isfinite(w)) return {INFINITY, i};
      if (std::fabs(w) > worst) worst = std::fabs(w), where = i;
    }
  }
  return {worst, where};
}

// Why the weights are diverged ("" if they are not): non-finite, or above `bound`.
std::string weight_problem(std::span<const float> params, const std::vector<model::ParamSpec>& specs, double bound) {
  const auto [worst, i] = largest_weight(params, specs);
  if (worst <= bound) return "";
  const std::string where = specs[i].name + " (" + layer_of(specs[i].name) + ")";
  if (!std::isfinite(worst)) return "a non-finite weight in " + where;
  return "exploding weights: max |w| " + num(worst) + " in " + where + " is above " +
         num(bound) + " (the divergence bound: a fixed multiple of the largest initial |w|)";
}

// The loss a diverged run stays far above: a uniform guess over the vocabulary (where the
// initialization starts), or the run's first loss if that was higher.
double loss_reference(const TrainState& st, const TrainOptions& o) {
  return std::max(st.first_loss, std::log(static_cast<double>(o.model.vocab)));
}

// Why a step's loss and gradients (per-tensor squared norms, in specs order), computed from the
// state `st`, show a diverged run ("" if they do not).
std::string loss_problem(double loss, double grad_norm, const std::vector<double>& norms2,
                         const std::vector<model::ParamSpec>& specs, const TrainState& st, const TrainOptions& o) {
  if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
    std::string where = "the loss";
    for (size_t i = 0; i < specs.size(); ++i) {
      if (!std::isfinite(norms2[i])) {
        where = "the gradient of " + specs[i].name + " (" + layer_of(specs[i].name) + ")";
        break;
      }
    }
    return "non-finite values (loss " + num(loss) + ", gradient norm " + num(grad_norm) +
           ") first in " + where;
  }
  if (grad_norm == 0) {
    return "the gradient is zero in every tensor (loss " + num(loss) +
           "): the model has saturated and no longer learns";
  }
  const auto largest_gradient = [&] {
    size_t w = 0;
    for (size_t i = 1; i < specs.size(); ++i) {
      if (norms2[i] > norms2[w]) w = i;
    }
    return "the largest gradient is " + specs[w].name + " (" + layer_of(specs[w].name) + ", norm " +
           num(std::sqrt(norms2[w])) + ")";
  };
  const double ref = loss_reference(st, o);
  if (loss > o.loss_ceiling_factor * ref) {
    return "the loss " + num(loss) + " is above " + num(o.loss_ceiling_factor) + " x " +
           num(ref) + " (a uniform guess over the vocabulary, or the run's first loss if higher); " +
           largest_gradient();
  }
  if (st.step >= 1 && loss > o.spike_factor * st.loss_mean) {  // from the second step: the mean needs a loss
    return "a loss spike: " + num(loss) + " > " + num(o.spike_factor) + " x the running mean " +
           num(st.loss_mean) + "; " + largest_gradient();
  }
  return "";
}

// What the loop needs from a model on some device. Parameters, gradients and optimizer state
// are in param_specs() order; host copies are FP32.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual void set_params(std::span<const float> p) = 0;
  virtual void get_params(std::span<float> p) = 0;
  virtual void set_optimizer_state(std::span<const float> m, std::span<const float> v) = 0;
  virtual void get_optimizer_state(std::span<float> m, std::span<float> v) = 0;
  virtual void zero_grad() = 0;
  // forward + backward of one micro-batch; returns its mean loss
  virtual double train_micro(const int32_t* in, const int32_t* tgt, int B, int T, float loss_scale) = 0;
  virtual double eval(const int32_t* in, const int32_t* tgt, int B, int T) = 0;
  virtual std::vector<double> grad_norms_squared() = 0;  // per parameter tensor
  virtual void scale_grads(float s) = 0;
  virtual void adamw(float lr, float beta1, float beta2, float eps, float weight_decay, int64_t step) = 0;
  virtual int64_t device_bytes() const { return 0; }
  // The parameters where the host can read them for free (CPU); empty where a copy would cost a
  // transfer (CUDA: the weights are then checked at checkpoints, where they are copied anyway).
  virtual std::span<const float> host_params() { return {}; }
  // The step about to run and the fraction of the run's tokens done (SR keys, late switch).
  virtual void set_step(uint32_t /*step*/, double /*progress*/) {}
};

class CpuBackend final : public Backend {
 public:
  CpuBackend(const model::ModelConfig& c, const std::optional<recipe::Plan>& plan, uint64_t seed)
      : m_(c), adam_m_(m_.params().size()), adam_v_(m_.params().size()) {
    if (plan) {
      linear_.emplace(*plan, seed);
      m_.set_linear_precision(&*linear_);
    }
  }
  void set_step(uint32_t step, double progress) override {
    if (linear_) linear_->set_step(step, progress);
  }
  void set_params(std::span<const float> p) override { std::copy(p.begin(), p.end(), m_.params().begin()); }
  void get_params(std::span<float> p) override { std::copy(m_.params().begin(), m_.params().end(), p.begin()); }
  std::span<const float> host_params() override { return m_.params(); }
  void set_optimizer_state(std::span<const float> m, std::span<const float> v) override {
    std::copy(m.begin(), m.end(), adam_m_.begin());
    std::copy(v.begin(), v.end(), adam_v_.begin());
  }
  void get_optimizer_state(std::span<float> m, std::span<float> v) override {
    std::copy(adam_m_.begin(), adam_m_.end(), m.begin());
    std::copy(adam_v_.begin(), adam_v_.end(), v.begin());
  }
  void zero_grad() override { m_.zero_grad(); }
  double train_micro(const int32_t* in, const int32_t* tgt, int B, int T, float loss_scale) override {
    const double loss = m_.forward(in, tgt, B, T);
    m_.backward(loss_scale);
    return loss;
  }
  double eval(const int32_t* in, const int32_t* tgt, int B, int T) override { return m_.forward(in, tgt, B, T); }
  std::vector<double> grad_norms_squared() override {
    std::vector<double> out;
    for (const auto& s : m_.specs()) {
      const double n = cpu::global_norm(m_.grads().data() + s.offset, s.numel);
      out.push_back(n * n);
    }
    return out;
  }
  void scale_grads(float f) override {
    for (float& g : m_.grads()) g *= f;
  }
  void adamw(float lr, float beta1, float beta2, float eps, float weight_decay, int64_t step) override {
    for (const auto& s : m_.specs()) {
      cpu::adamw_update(m_.params().data() + s.offset, m_.grads().data() + s.offset, adam_m_.data() + s.offset,
                        adam_v_.data() + s.offset, s.numel, lr, beta1, beta2, eps, s.decay ? weight_decay : 0.0f, step);
    }
  }

 private:
  model::CpuModel m_;
  std::vector<float> adam_m_, adam_v_;
  std::optional<model::QuantizedLinearCpu> linear_;
};

#if NVFP4_HAVE_CUDA
class CudaBackend final : public Backend {
 public:
  CudaBackend(const model::ModelConfig& c, const std::optional<recipe::Plan>& plan, uint64_t seed) : m_(c) {
    if (plan) m_.set_plan(*plan, seed);
  }
  void set_step(uint32_t step, double progress) override { m_.set_step(step, progress); }
  void set_params(std::span<const float> p) override { m_.set_params(p); }
  void get_params(std::span<float> p) override { m_.get_params(p); }
  void set_optimizer_state(std::span<const float> m, std::span<const float> v) override { m_.set_optimizer_state(m, v); }
  void get_optimizer_state(std::span<float> m, std::span<float> v) override { m_.get_optimizer_state(m, v); }
  void zero_grad() override { m_.zero_grad(); }
  double train_micro(const int32_t* in, const int32_t* tgt, int B, int T, float loss_scale) override {
    const double loss = m_.forward(in, tgt, B, T, loss_scale);
    m_.backward();
    return loss;
  }
  double eval(const int32_t* in, const int32_t* tgt, int B, int T) override { return m_.forward(in, tgt, B, T); }
  std::vector<double> grad_norms_squared() override { return m_.grad_norms_squared(); }
  void scale_grads(float f) override { m_.scale_grads(f); }
  void adamw(float lr, float beta1, float beta2, float eps, float weight_decay, int64_t step) override {
    m_.adamw(lr, beta1, beta2, eps, weight_decay, step);
  }
  int64_t device_bytes() const override { return m_.device_bytes(); }

 private:
  model::CudaModel m_;
};
#endif

std::unique_ptr<Backend> make_backend(const std::string& device, const model::ModelConfig& c,
                                      const std::optional<recipe::Plan>& r, uint64_t seed) {
  if (device == "cpu") return std::make_unique<CpuBackend>(c, r, seed);
#if NVFP4_HAVE_CUDA
  if (device == "cuda") {
    if (cuda::device_count() == 0) {
      throw Error("--device cuda: no CUDA device (" + cuda::unavailable_reason() + "); use --device cpu");
    }
    return std::make_unique<CudaBackend>(c, r, seed);
  }
#else
  if (device == "cuda") throw Error("--device cuda: this build has no CUDA support (configure with NVFP4_CUDA=ON)");
#endif
  throw Error("--device " + device + " is not known; use cpu, cuda or auto");
}

}  // namespace

std::string resolve_device(const std::string& device) {
  if (device != "auto") return device;
#if NVFP4_HAVE_CUDA
  if (cuda::device_count() > 0) return "cuda";
#endif
  return "cpu";
}

model::ModelConfig model_preset(const std::string& name) {
  model::ModelConfig c;
  if (name == "tiny") {  // seconds on a CPU: tests and smoke runs
    c.n_layer = 2, c.d_model = 64, c.n_head = 2, c.n_kv_head = 1, c.seq_len = 64;  // head size 32 (CUDA kernels)
  } else if (name == "small") {  // minutes on a CPU: the README's main job
    c.n_layer = 4, c.d_model = 128, c.n_head = 4, c.n_kv_head = 4, c.seq_len = 128;
  } else if (name == "gpt2-small") {  // 12 x 768, the speed measurement of issue 4
    c.n_layer = 12, c.d_model = 768, c.n_head = 12, c.n_kv_head = 12, c.seq_len = 1024, c.d_ffn = 2048;
    c.vocab = 50304;
  } else {
    throw Error("--preset " + name + " is not known; use one of: " + model_preset_names());
  }
  return c;
}

std::string model_preset_names() { return "tiny, small, gpt2-small"; }

void fit_vocab_to_data(TrainOptions& o, int32_t data_vocab) {
  if (data_vocab > o.model.vocab && !o.vocab_explicit) {
    o.model.vocab = data_vocab;
    o.model.validate();
  }
  if (data_vocab > o.model.vocab) {
    throw Error("the data in " + o.data_dir + " uses a vocabulary of " + std::to_string(data_vocab) +
                " tokens but the model's vocab is " + std::to_string(o.model.vocab) + "; raise --vocab");
  }
}

TrainResult train(const TrainOptions& opt_in) {
  TrainOptions o = opt_in;
  validate(o);
  o.schedule.total_steps = o.steps;
  validate(o.schedule);
  cpu::set_num_threads(o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  const int B = o.batch, T = o.model.seq_len;

  // ---- data: the manifest checked against its shards, then every token ----
  const io::TokenDataset dataset = io::open_token_dataset(o.data_dir);
  io::ShardLoader train_data(dataset.shards(io::Split::train), B, T);
  io::ShardLoader val_data(dataset.shards(io::Split::val), B, T);
  fit_vocab_to_data(o, dataset.vocab_size);

  // ---- model and optimizer state ----
  if (o.device == "auto") o.device = resolve_device("auto");
  // The recipe resolved once against the model's linear layers: what every step, on either
  // device, and every checkpoint's metadata read.
  std::optional<recipe::Plan> plan;
  if (o.recipe) plan = model::resolve_plan(*o.recipe, o.model.n_layer);
  const std::unique_ptr<Backend> be = make_backend(o.device, o.model, plan, o.seed);
  const std::vector<model::ParamSpec> specs = model::param_specs(o.model);
  const size_t P = static_cast<size_t>(specs.back().offset + specs.back().numel);
  std::vector<float> params(P, 0.0f), adam_m(P, 0.0f), adam_v(P, 0.0f);  // host copies (checkpoints)
  TrainState st;
  fs::create_directories(o.out_dir);
  io::remove_stale_temp_files(o.out_dir);  // checkpoints, run.json, metrics of a killed run
  const std::string metrics_path = (fs::path(o.out_dir) / "metrics.jsonl").string();
  const nlohmann::ordered_json run = run_json(o);

  // The divergence bound on weights: init_params is a function of the seed alone, so a resumed
  // run measures the same initial weights.
  model::init_params(o.model, params, o.seed);
  const double weight_bound = o.weight_growth_factor * largest_weight(params, specs).first;

  const std::string latest = io::latest_checkpoint(o.out_dir);
  std::string resumed_from;  // the checkpoint this invocation continues from
  if (o.resume && !latest.empty()) {
    // Newest first; a damaged one is reported and the one before it tried (nothing is deleted:
    // the run writes a good checkpoint of that step when it gets there).
    const auto all = io::list_checkpoints(o.out_dir);
    Resumed r;
    for (size_t i = all.size(); i-- > 0;) {
      try {
        r = read_resume_checkpoint(all[i].second, specs, params, adam_m, adam_v);
        resumed_from = all[i].second;
        break;
      } catch (const Error& e) {
        if (i == 0) {
          throw Error(std::string(e.what()) + "; there is no older checkpoint in " + o.out_dir +
                      " to fall back to: start again with a new --out (or without --resume in an empty one)");
        }
        std::fprintf(stderr, "nvfp4: warning: %s; resuming from %s instead\n", e.what(), all[i - 1].second.c_str());
      }
    }
    // Another dataset is no damage to fall back from: an error naming both.
    check_same_dataset(io::CheckpointReader::open(resumed_from), dataset);
    for (const char* key : kResumeKeys) {
      if (r.run.at(key) != nlohmann::json(run.at(key))) {
        throw Error("--resume: " + resumed_from + " was written with " + key + " = " + r.run.at(key).dump() +
                    ", this run has " + run.at(key).dump() + "; use the same options or a new --out");
      }
    }
    be->set_params(params);
    be->set_optimizer_state(adam_m, adam_v);
    st = r.state;
    train_data.seek(st.position);
    train::truncate_after_step(metrics_path, st.step);
  } else {
    if (!latest.empty()) {
      throw Error(o.out_dir + " already holds checkpoints (" + fs::path(latest).filename().string() +
                  "); pass --resume to continue that run, or choose a new --out");
    }
    be->set_params(params);
    be->set_optimizer_state(adam_m, adam_v);
    std::error_code ec;
    fs::remove(metrics_path, ec);  // a fresh run: no stale records
  }
  {
    const std::string text = run.dump(2) + "\n";
    io::write_file_atomic((fs::path(o.out_dir) / "run.json").string(),
                          std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  }

  TrainResult result;
  result.metrics_path = metrics_path;
  result.unigram_val_loss = unigram_baseline(train_data, val_data, o.model.vocab);
  MetricsLog log(metrics_path);
  ProgressBar bar(stderr);

  std::vector<int32_t> window, in, tgt;
  auto evaluate = [&]() {
    val_data.seek({});
    double sum = 0;
    for (int64_t i = 0; i < o.val_batches; ++i) {
      window = val_data.next();
      split_window(window, B, T, in, tgt);
      sum += be->eval(in.data(), tgt.data(), B, T);
    }
    return sum / static_cast<double>(o.val_batches);
  };
  // Writes the checkpoint of the state after st.step, unless its weights fail the check (the
  // CUDA backend's only weight check: here the weights reach the host anyway). Returns why not.
  auto save = [&]() -> std::string {
    be->get_params(params);
    be->get_optimizer_state(adam_m, adam_v);
    if (std::string why = weight_problem(params, specs, weight_bound); !why.empty()) return why;
    std::vector<io::CheckpointTensor> tensors;
    for (const auto& s : specs) tensors.push_back({s.name, s.shape, params.data() + s.offset});
    for (const auto& s : specs) tensors.push_back({"optimizer.m." + s.name, s.shape, adam_m.data() + s.offset});
    for (const auto& s : specs) tensors.push_back({"optimizer.v." + s.name, s.shape, adam_v.data() + s.offset});
    const std::string path = io::checkpoint_path(o.out_dir, st.step);
    io::write_checkpoint(path, tensors,
                         {{"nvfp4.run", run.dump()},
                          {io::kCheckpointModelConfigKey, o.model.to_json()},
                          {kTokenizerKey, dataset.tokenizer},
                          {kDatasetKey, dataset_json(dataset)},
                          {"nvfp4.recipe", o.recipe ? recipe::to_json(*o.recipe) : std::string("fp32")},
                          {"nvfp4.plan", plan ? plan->to_json() : std::string("fp32")},
                          {"nvfp4.train_state", state_json(st).dump()}});
    io::prune_checkpoints(o.out_dir, o.keep_checkpoints);
    result.last_checkpoint = path;
    return "";
  };
  bool state_checked = false;  // the state this invocation started from passed a step's checks
  // `step` (1-based) failed the checks for `why`; `updated`: its update had been applied.
  auto diverge = [&](int64_t step, const std::string& why, bool updated) {
    result.diverged = true;
    std::string last;
    if (!result.last_checkpoint.empty()) {
      last = "the last checkpoint that passed the checks is " + result.last_checkpoint;
    } else if (!resumed_from.empty() && state_checked) {
      last = "the last checkpoint that passed the checks is " + resumed_from;
    } else if (!resumed_from.empty()) {
      last = "the checkpoint this run resumed from, " + resumed_from + ", holds the state that failed: resume from an "
             "older one (move it aside) or start again";
    } else {
      last = "no checkpoint has passed the checks";
    }
    result.divergence = "diverged at step " + std::to_string(step) + ": " + why + ". " +
                        (updated ? "Its weights are not saved; " : "Nothing was updated; ") + last;
    log.log({{"step", step}, {"event", "divergence"}, {"message", result.divergence}});
  };

  const int64_t tokens_per_step = int64_t(B) * T * o.grad_accum;
  // NOTE: a checkpoint of the state after step s is written during step s + 1, once that step's
  // loss and gradients (computed from the state) pass the checks; the last state's, once its
  // validation loss does. So no checkpoint ever holds a state that failed.
  bool ckpt_due = false;
  while (st.step < o.steps) {
    const auto t0 = Clock::now();
    const double lr = lr_at(o.schedule, st.step);
    be->set_step(static_cast<uint32_t>(st.step), static_cast<double>(st.tokens) / static_cast<double>(tokens_per_step * o.steps));
    be->zero_grad();
    double loss = 0;
    std::string why;
    try {
      for (int a = 0; a < o.grad_accum; ++a) {
        window = train_data.next();
        split_window(window, B, T, in, tgt);
        loss += be->train_micro(in.data(), tgt.data(), B, T, 1.0f / static_cast<float>(o.grad_accum)) /
                static_cast<double>(o.grad_accum);
      }
    } catch (const NonFiniteError& e) {  // a quantizer met NaN/Inf in an operand it was given
      why = std::string("non-finite values in a quantized GEMM operand: ") + e.what();
    }
    // Per-tensor squared norms, summed in a fixed order: the global norm, and where a
    // divergence shows first.
    const std::vector<double> norms2 = why.empty() ? be->grad_norms_squared() : std::vector<double>();
    double total2 = 0;
    for (double n2 : norms2) total2 += n2;
    const double grad_norm = std::sqrt(total2);

    // ---- divergence: stop before the update ----
    if (why.empty()) why = loss_problem(loss, grad_norm, norms2, specs, st, o);
    if (!why.empty()) {
      diverge(st.step + 1, why, false);
      break;
    }
    state_checked = true;
    double save_s = 0;  // not training time
    if (ckpt_due) {
      const auto s0 = Clock::now();
      if (std::string bad = save(); !bad.empty()) {
        diverge(st.step, "after its update, " + bad, true);
        break;
      }
      save_s = std::chrono::duration<double>(Clock::now() - s0).count();
    }

    // ---- update ----
    const double clip = o.grad_clip > 0 && grad_norm > o.grad_clip ? o.grad_clip / grad_norm : 1.0;
    if (clip != 1.0) be->scale_grads(static_cast<float>(clip));
    be->adamw(static_cast<float>(lr), static_cast<float>(o.beta1), static_cast<float>(o.beta2),
              static_cast<float>(o.eps), static_cast<float>(o.weight_decay), st.step + 1);
    if (const auto host = be->host_params(); !host.empty()) {
      if (std::string bad = weight_problem(host, specs, weight_bound); !bad.empty()) {
        diverge(st.step + 1, "after the update, " + bad, true);
        break;
      }
    }
    st.step += 1;
    st.tokens += tokens_per_step;
    st.position = train_data.position();
    st.loss_mean = st.step == 1 ? loss : 0.9 * st.loss_mean + 0.1 * loss;
    if (st.first_loss == 0) st.first_loss = loss;

    StepRecord r;
    r.step = st.step;
    r.tokens = st.tokens;
    r.loss = loss;
    r.lr = lr;
    r.grad_norm = grad_norm;
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count() - save_s;  // training only
    r.step_ms = secs * 1e3;
    r.tokens_per_s = static_cast<double>(tokens_per_step) / secs;
    const bool validate_now = st.step == o.steps || (o.val_every > 0 && st.step % o.val_every == 0);
    if (validate_now) r.val_loss = evaluate();
    result.history.push_back(r);
    nlohmann::ordered_json rec = {{"step", r.step},         {"tokens", r.tokens},
                                  {"loss", r.loss},         {"lr", r.lr},
                                  {"grad_norm", r.grad_norm}, {"tokens_per_s", r.tokens_per_s},
                                  {"step_ms", r.step_ms},   {"peak_mem_bytes", peak_rss_bytes()}};
    if (be->device_bytes() > 0) rec["device_mem_bytes"] = be->device_bytes();
    if (r.val_loss >= 0) rec["val_loss"] = r.val_loss;
    log.log(rec);
    if (o.progress) bar.update(st.step, o.steps, loss, r.tokens_per_s);
    ckpt_due = st.step == o.steps || (o.ckpt_every > 0 && st.step % o.ckpt_every == 0);
  }
  // The last state has no next step to check it: its validation loss stands in for that loss.
  if (ckpt_due && !result.diverged) {
    const double val = result.history.back().val_loss;
    std::string why;
    if (!std::isfinite(val) || val > o.loss_ceiling_factor * loss_reference(st, o)) {
      why = "the validation loss after the last step is " + num(val) + ", above " + num(o.loss_ceiling_factor) +
            " x " + num(loss_reference(st, o)) +
            " (a uniform guess, or the first loss if higher)";
    } else {
      why = save();
      if (!why.empty()) why = "after its update, " + why;
    }
    if (!why.empty()) diverge(st.step, why, true);
  }
  if (o.progress) bar.finish();
  result.peak_rss_bytes = peak_rss_bytes();
  result.device_bytes = be->device_bytes();
  result.device = o.device;
  return result;
}

}  // namespace nvfp4::train
