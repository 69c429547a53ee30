// What the engines share (include/nvfp4/engine.hpp): precision names, the per-layer plan, the
// batch's rows, the guard's totals.
#include <fnmatch.h>

#include <algorithm>

#include "nvfp4/engine.hpp"
#include "nvfp4/error.hpp"

namespace nvfp4::infer {

namespace {
constexpr std::string_view kPrecisionNames[] = {"fp32", "bf16", "w4a16", "w4a4", "fp8"};
}

std::string_view precision_name(Precision p) { return kPrecisionNames[static_cast<size_t>(p)]; }

Precision parse_precision(std::string_view name, std::string_view option) {
  for (size_t i = 0; i < std::size(kPrecisionNames); ++i) {
    if (name == kPrecisionNames[i]) return static_cast<Precision>(i);
  }
  throw Error(std::string(option) + " " + std::string(name) + ": not a precision (fp32, bf16, w4a16, w4a4, fp8)");
}

std::string_view kv_cache_name(KvCache k) { return k == KvCache::fp8 ? "fp8" : "model"; }

KvCache parse_kv_cache(std::string_view name, std::string_view option) {
  if (name == "model") return KvCache::model;
  if (name == "fp8") return KvCache::fp8;
  throw Error(std::string(option) + " " + std::string(name) +
              ": not a KV cache format (model: the engine's own precision; fp8: E4M3 with per-layer scales)");
}

bool is_quantized(Precision p) { return p == Precision::w4a16 || p == Precision::w4a4 || p == Precision::fp8; }

std::vector<LinearPlan> resolve_linear_plan(const model::ModelConfig& c, const EngineOptions& o, Precision base) {
  std::vector<LinearPlan> plan;
  for (const auto& ref : model::linear_refs(c.n_layer)) {
    const bool head = ref.layer == c.n_layer;
    std::string name = head ? std::string("lm_head") : "model.layers." + std::to_string(ref.layer) + "." + ref.name;
    const bool quantize = !head || o.quantize_lm_head;
    plan.push_back({std::move(name), quantize ? o.precision : base});
  }
  for (const std::string& pattern : o.keep_bf16) {
    bool any = false;
    for (auto& p : plan) {
      if (fnmatch(pattern.c_str(), p.name.c_str(), 0) == 0) {
        p.precision = base;
        any = true;
      }
    }
    if (!any) {
      throw Error("--keep-bf16 " + pattern + ": names no linear layer (they are called like "
                  "model.layers.0.self_attn.q_proj, model.layers.*.mlp.down_proj, lm_head)");
    }
  }
  return plan;
}

int64_t GuardStats::total_rows() const {
  int64_t n = 0;
  for (int64_t r : rows) n += r;
  return n;
}

int64_t GuardStats::total_fallbacks() const {
  int64_t n = 0;
  for (int64_t r : fallbacks) n += r;
  return n;
}

double GuardStats::rate() const {
  const int64_t r = total_rows();
  return r ? static_cast<double>(total_fallbacks()) / static_cast<double>(r) : 0.0;
}

void check_cuda_kv_cache(const EngineOptions& o) {
  if (o.kv_cache == KvCache::fp8) {
    throw Error("--kv-cache fp8 runs on the CPU engine; the CUDA kernels are not written yet (use --device cpu, "
                "or --kv-cache model on CUDA)");
  }
  if (o.kv_observer) throw Error("a KV cache observer (FP8 KV cache calibration) runs on the CPU engine only for now");
}

#if !NVFP4_HAVE_CUDA
std::unique_ptr<Engine> make_cuda_engine(const HfModel&, const EngineOptions& o) {
  check_cuda_kv_cache(o);
  throw Error("--device cuda: this build has no CUDA support (configure with NVFP4_CUDA=ON)");
}
#endif

std::unique_ptr<Engine> make_engine(const HfModel& model, const EngineOptions& o, std::string_view device) {
  if (device == "cpu") return make_cpu_engine(model, o);
  if (device == "cuda") return make_cuda_engine(model, o);
  throw Error("--device " + std::string(device) + " is not known; use cpu or cuda");
}

BatchRows batch_rows(std::span<const SeqChunk> chunks, std::span<const int> lengths, int max_context, int vocab) {
  if (chunks.empty()) throw Error("engine forward: no chunks to run");
  BatchRows b;
  std::vector<bool> seen(lengths.size(), false);
  for (size_t i = 0; i < chunks.size(); ++i) {
    const SeqChunk& ch = chunks[i];
    const std::string where = "engine forward: chunk " + std::to_string(i) + ": ";
    if (ch.slot < 0 || static_cast<size_t>(ch.slot) >= lengths.size()) {
      throw Error(where + "slot " + std::to_string(ch.slot) + " is not in [0, " + std::to_string(lengths.size()) + ")");
    }
    if (seen[ch.slot]) throw Error(where + "slot " + std::to_string(ch.slot) + " appears twice in one batch");
    seen[ch.slot] = true;
    if (ch.tokens.empty()) throw Error(where + "no tokens");
    const int64_t end = int64_t(lengths[ch.slot]) + static_cast<int64_t>(ch.tokens.size());
    if (end > max_context) {
      throw Error(where + "slot " + std::to_string(ch.slot) + " would hold " + std::to_string(end) +
                  " tokens; the engine's context is " + std::to_string(max_context) + " (raise the max context)");
    }
    for (size_t t = 0; t < ch.tokens.size(); ++t) {
      if (ch.tokens[t] < 0 || ch.tokens[t] >= vocab) {
        throw Error(where + "token " + std::to_string(t) + " is " + std::to_string(ch.tokens[t]) + ", not in [0, " +
                    std::to_string(vocab) + ")");
      }
      if (ch.all_logits || t + 1 == ch.tokens.size()) b.out_rows.push_back(static_cast<int32_t>(b.tokens.size()));
      b.tokens.push_back(ch.tokens[t]);
      b.slot.push_back(ch.slot);
      b.pos.push_back(lengths[ch.slot] + static_cast<int32_t>(t));
    }
    b.new_length.push_back(static_cast<int>(end));
    b.chunk_slot.push_back(ch.slot);
  }
  return b;
}

}  // namespace nvfp4::infer
