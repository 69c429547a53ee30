// What the CPU and CUDA engines share (src/infer/engine_cpu.cpp, engine_cuda.cu): the model, the
// options, the per-layer plan, the slots' lengths and context, the capture sink, and the checks of
// the constructor and of set_linear_precisions.
#pragma once

#include <fnmatch.h>

#include <algorithm>
#include <string>
#include <vector>

#include "infer/kv_blocks.hpp"
#include "nvfp4/engine.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/hf_model.hpp"

namespace nvfp4::infer {

class EngineBase : public Engine {
 public:
  // `base`: the engine's unquantized precision (fp32 CPU, bf16 CUDA); `other`: the one it refuses.
  EngineBase(const HfModel& m, const EngineOptions& o, Precision base, Precision other, const char* other_is)
      : m_(m), c_(m.config()), o_(o), idx_(model::param_index(c_)), base_(base), other_(other), other_is_(other_is) {
    if (o.precision == other) {
      throw Error("--precision " + std::string(precision_name(other)) + " is " + other_is +
                  "; this engine's unquantized precision is " + std::string(precision_name(base)));
    }
    if (o.max_sequences < 1) throw Error("engine: max_sequences must be >= 1");
    max_ctx_ = o.max_context > 0 ? o.max_context : std::min(c_.seq_len, 4096);
    if (max_ctx_ > c_.seq_len) {
      throw Error("a context of " + std::to_string(max_ctx_) + " tokens exceeds the model's max_position_embeddings (" +
                  std::to_string(c_.seq_len) + ")");
    }
    plan_ = resolve_linear_plan(c_, o, base);
    stored_.assign(plan_.size(), false);
    unquantized_.assign(plan_.size(), true);
    for (size_t i = 0; i < plan_.size(); ++i) {
      stored_[i] = m.stored_nvfp4(static_cast<size_t>(linear_spec(i)));
      unquantized_[i] = m.has_unquantized(static_cast<size_t>(linear_spec(i)));
    }
    if (m.quantization()) checkpoint_plan(o, base);
    if (o.kv_cache == KvCache::fp8) {
      const auto& s = m.kv_cache_scales();
      kv_k_scale_ = s ? s->k : std::vector<float>(static_cast<size_t>(c_.n_layer), 1.0f);
      kv_v_scale_ = s ? s->v : std::vector<float>(static_cast<size_t>(c_.n_layer), 1.0f);
    }
    len_.assign(static_cast<size_t>(o.max_sequences), 0);
    kv_ = KvBlockTable(o.max_sequences, max_ctx_, o.kv_block_size, o.kv_blocks);
  }

  const model::ModelConfig& config() const override { return c_; }
  const std::vector<LinearPlan>& linear_plan() const override { return plan_; }
  int max_sequences() const override { return static_cast<int>(len_.size()); }
  int max_context() const override { return max_ctx_; }
  int length(int slot) const override { return len_.at(static_cast<size_t>(slot)); }
  void reset(int slot) override {
    len_.at(static_cast<size_t>(slot)) = 0;
    kv_.release(slot);
  }
  int kv_block_size() const override { return kv_.block_size(); }
  int kv_blocks() const override { return kv_.blocks(); }
  int kv_free_blocks() const override { return kv_.free_blocks(); }
  KvCache kv_cache() const override { return o_.kv_cache; }
  const std::vector<float>& kv_k_scales() const override { return kv_k_scale_; }
  const std::vector<float>& kv_v_scales() const override { return kv_v_scale_; }
  void capture_linear_output(size_t i, std::vector<float>* sink) override {
    capture_ = i;
    sink_ = sink;
  }

 protected:
  // The precisions of the plan, for the first load.
  std::vector<Precision> plan_precisions() const {
    std::vector<Precision> p;
    for (const auto& x : plan_) p.push_back(x.precision);
    return p;
  }
  // set_linear_precisions' argument checked: one per layer, none the engine refuses, w4a16 or
  // w4a4 for a checkpoint's NVFP4 layer (its unquantized weight is not in the folder).
  void check_precisions(std::span<const Precision> p) const {
    if (p.size() != plan_.size()) throw Error("set_linear_precisions: one precision per linear layer needed");
    for (size_t i = 0; i < p.size(); ++i) {
      if (p[i] == other_) {
        throw Error("set_linear_precisions: " + std::string(precision_name(other_)) + " is " + other_is_);
      }
      if (!unquantized_[i] && !runs_stored(p[i])) {
        throw Error(stored_nvfp4_error(plan_[i].name, p[i]));
      }
    }
  }
  // Whether linear layer i runs from NVFP4 bits the model holds (HfModel::stored_nvfp4) at
  // precision p: at w4a16 or w4a4 the engine takes the stored codes, block scales and factors and
  // never quantizes the layer again; at another precision it reads the unquantized weight.
  bool stored(size_t i, Precision p) const { return stored_[i] && runs_stored(p); }
  static bool runs_stored(Precision p) { return p == Precision::w4a16 || p == Precision::w4a4; }
  bool capturing(size_t i) const { return sink_ && capture_ == i; }
  // The linear layers whose precision becomes p[i] (every one when `all`), the plan updated.
  std::vector<size_t> change_precisions(std::span<const Precision> p, bool all) {
    std::vector<size_t> changed;
    for (size_t i = 0; i < plan_.size(); ++i) {
      if (!all && plan_[i].precision == p[i]) continue;
      plan_[i].precision = p[i];
      changed.push_back(i);
    }
    return changed;
  }
  bool is_head(size_t i) const { return i + 1 == plan_.size(); }
  // Linear layer i's weight: its index in the model's specs() (linear_refs() order).
  int linear_spec(size_t i) const {
    if (is_head(i)) return idx_.lm_head;
    return idx_.layers[i / 7].weight(static_cast<model::LinearKind>(i % 7));
  }

  const HfModel& m_;
  std::vector<bool> stored_, unquantized_;
  model::ModelConfig c_;
  EngineOptions o_;
  model::ParamIndex idx_;
  std::vector<LinearPlan> plan_;
  std::vector<int> len_;
  std::vector<float> kv_k_scale_, kv_v_scale_;  // KvCache::fp8: per layer decode scales
  int max_ctx_ = 0;
  KvBlockTable kv_{1, 1, 1, 1};  // replaced in the constructor
  size_t capture_ = 0;
  std::vector<float>* sink_ = nullptr;

 private:
  std::string stored_nvfp4_error(const std::string& layer, Precision p) const {
    return layer + " is stored as NVFP4 in " + m_.dir() + " (a quantized checkpoint): it runs at w4a16 or w4a4, not " +
           std::string(precision_name(p)) + " (measure the unquantized model for that)";
  }
  // A quantized checkpoint: its NVFP4 layers run at the asked precision when that is w4a16 or w4a4,
  // else at the checkpoint's own scheme (an unquantized --precision); the layers it left
  // unquantized run at the engine's base precision. --keep-bf16 cannot unquantize a stored layer.
  void checkpoint_plan(const EngineOptions& o, Precision base) {
    if (o.precision == Precision::fp8) {
      throw Error("--precision fp8: " + m_.dir() + " is an NVFP4 checkpoint; its quantized layers run at w4a16 or "
                  "w4a4 (give one of those, or no --precision for the checkpoint's own scheme)");
    }
    const Precision scheme = o.precision == Precision::w4a16 || o.precision == Precision::w4a4 ? o.precision
                             : m_.quantization()->w4a4                                      ? Precision::w4a4
                                                                                            : Precision::w4a16;
    for (size_t i = 0; i < plan_.size(); ++i) {
      bool kept = false;
      for (const std::string& pattern : o.keep_bf16) {
        if (!stored_[i] || fnmatch(pattern.c_str(), plan_[i].name.c_str(), 0) != 0) continue;
        if (!unquantized_[i]) throw Error("--keep-bf16 " + pattern + ": " + stored_nvfp4_error(plan_[i].name, base));
        kept = true;
      }
      plan_[i].precision = stored_[i] && !kept ? scheme : base;
    }
  }

  Precision base_, other_;
  const char* other_is_;
};

}  // namespace nvfp4::infer
