// End-to-end inference speed of the CUDA engine on random weights at a real model's shape
// (Llama-3.1-8B, Llama-3.2-1B): batch-1 decode tokens/s against the bandwidth bound (bytes the
// step must read / the device-to-device copy bandwidth measured in the same run) and time to
// first token of a long prompt against the BF16 prefill FLOP time at the cuBLAS BF16 rate
// measured in the same run. A precision with "-apart" runs with EngineOptions::fuse off (every
// projection its own GEMM, every row op its own launch); with "-serial", without programmatic
// dependent launch (cuda::set_dependent_launch(false): every kernel starts after the previous
// one ended); with "-decoded", NVFP4 weights decoded to BF16 before a cuBLAS GEMM at every step
// (EngineOptions::fused_nvfp4 off: the path before the fused GEMV); with "-head", the LM head at
// the precision too (EngineOptions::quantize_lm_head; kept BF16 otherwise, as ModelOpt and vLLM
// keep it); with "-prefill", prompts of more than 64 tokens on the fused NVFP4 GEMM
// (EngineOptions::fused_nvfp4_prefill) instead of decode-then-cuBLAS. Writes the model folder
// first (random BF16 weights, N(0, 0.02)-like, norm gains 1) unless it is there.
//
//   bench_infer --config llama-3.1-8b --dir /tmp/m8b
//               [--precisions bf16,bf16-serial,bf16-apart,w4a16,w4a16-decoded,w4a16-head,w4a16-prefill,w4a4,...]
//               [--prompt 1024] [--decode 128] [--json OUT.json]
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "cuda_check.hpp"
#include "format/scalar.hpp"
#include "nvfp4/cuda_ops.hpp"
#include "nvfp4/engine.hpp"
#include "nvfp4/hf_model.hpp"
#include "nvfp4/safetensors.hpp"

namespace {

using namespace nvfp4;
namespace fs = std::filesystem;

struct Shape {
  const char* name;
  int hidden, inter, layers, heads, kv_heads, vocab;
  double theta;
  bool tied;
};
constexpr Shape kShapes[] = {
    {"llama-3.1-8b", 4096, 14336, 32, 32, 8, 128256, 500000.0, false},
    {"llama-3.2-1b", 2048, 8192, 16, 32, 8, 128256, 500000.0, true},
};

std::string config_json(const Shape& s) {
  nlohmann::ordered_json j;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  j["hidden_size"] = s.hidden;
  j["intermediate_size"] = s.inter;
  j["num_hidden_layers"] = s.layers;
  j["num_attention_heads"] = s.heads;
  j["num_key_value_heads"] = s.kv_heads;
  j["vocab_size"] = s.vocab;
  j["max_position_embeddings"] = 131072;
  j["rms_norm_eps"] = 1e-5;
  j["rope_theta"] = s.theta;
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", s.tied ? 32.0 : 8.0}, {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  j["tie_word_embeddings"] = s.tied;
  j["eos_token_id"] = 128001;
  j["torch_dtype"] = "bfloat16";
  return j.dump(2);
}

// Element k's random value, uniform in [-0.5, 0.5): splitmix64 of k + 1 (fast, the same on every
// machine and on the device).
__host__ __device__ inline float hashed_uniform(uint64_t k) {
  uint64_t z = (k + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) / 16777216.0f - 0.5f;
}

// Random BF16 weights, uniform with standard deviation 0.02 (hashed_uniform of the element's
// offset), written as one safetensors file.
void write_model(const Shape& s, const fs::path& dir) {
  model::ModelConfig c;
  c.n_layer = s.layers, c.d_model = s.hidden, c.n_head = s.heads, c.n_kv_head = s.kv_heads, c.d_ffn = s.inter;
  c.vocab = s.vocab, c.seq_len = 131072, c.tie_embeddings = s.tied;
  const auto specs = model::param_specs(c);
  std::vector<std::vector<uint16_t>> data(specs.size());
  std::vector<io::TensorRef> refs;
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& sp = specs[i];
    data[i].resize(static_cast<size_t>(sp.numel));
    uint16_t* out = data[i].data();
    const bool gain = sp.shape.size() == 1;
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        const int64_t per = (sp.numel + threads - 1) / threads, lo = t * per, hi = std::min(sp.numel, lo + per);
        for (int64_t k = lo; k < hi; ++k) {
          const float u = hashed_uniform(static_cast<uint64_t>(sp.offset + k));
          out[k] = fmt::bf16_encode(gain ? 1.0f : u * 0.0693f);  // std 0.02
        }
      });
    }
    for (auto& th : pool) th.join();
    refs.push_back({sp.name, DType::BF16, sp.shape, {reinterpret_cast<const uint8_t*>(out), data[i].size() * 2}});
  }
  fs::create_directories(dir);
  io::write_file((dir / "model.safetensors").string(), refs);
  io::write_text_file_atomic((dir / "config.json").string(), config_json(s));
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Device-to-device copy bandwidth (2 x bytes / time), GB/s: 1 GiB, median of 20 after 3.
double copy_gbps() {
  const size_t n = size_t{1} << 30;
  void *a, *b;
  CK(cudaMalloc(&a, n));
  CK(cudaMalloc(&b, n));
  CK(cudaMemset(a, 0x5a, n));
  const double t = bench::median_event_seconds([&] { CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice)); }, 3, 20);
  CK(cudaFree(a));
  CK(cudaFree(b));
  return 2.0 * static_cast<double>(n) / t / 1e9;
}

// cuBLAS BF16 GEMM rate, TFLOP/s: (M, K) x (N, K)^T with M the prompt's tokens and (N, K) the
// model's MLP up-projection shape, random data, median of 20 after 5.
double gemm_tflops(int64_t M, int64_t N, int64_t K) {
  std::vector<uint16_t> h(static_cast<size_t>(std::max(M, N) * K));
  std::mt19937 rng(1);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (auto& x : h) x = fmt::bf16_encode(d(rng));
  uint16_t *a, *b, *c;
  CK(cudaMalloc(&a, M * K * 2));
  CK(cudaMalloc(&b, N * K * 2));
  CK(cudaMalloc(&c, M * N * 2));
  CK(cudaMemcpy(a, h.data(), M * K * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(b, h.data(), N * K * 2, cudaMemcpyHostToDevice));
  cuda::Blas blas;
  const double t = bench::median_event_seconds([&] { blas.matmul_forward(c, a, b, M, K, N, nullptr); }, 5, 20);
  CK(cudaFree(a));
  CK(cudaFree(b));
  CK(cudaFree(c));
  return 2.0 * M * N * K / t / 1e12;
}

// Random BF16 values (hashed_uniform, std about 0.02; element i of stream `seed` hashes i + seed * 2^40)
// written on the device.
__global__ void fill_random_bf16(uint16_t* p, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float u = hashed_uniform(static_cast<uint64_t>(i) + (seed << 40)) * 0.0693f;
    p[i] = static_cast<uint16_t>(__float_as_uint(u) >> 16);
  }
}

// The decode step's GEMMs alone, one token: every layer's seven projections and the head, as
// cuBLAS runs them in the engine, weights cycling over enough copies of one layer that none is
// still in L2 — the part of the bf16 step the GEMMs take. Also with q/k/v as one GEMM and
// gate/up as one: what fusing them would save; and those with cuda::gemv_bf16 (the head's output
// F32, as the engine's). Returns {separate, fused, fused with gemv_bf16} seconds per token.
std::tuple<double, double, double> decode_gemm_seconds(const model::ModelConfig& c) {
  const int64_t C = c.d_model, F = c.d_ffn, QD = int64_t(c.n_head) * c.head_size(),
                KD = int64_t(c.n_kv_head) * c.head_size(), V = c.vocab;
  const int64_t layer = (QD + 2 * KD) * C + C * QD + 3 * F * C;
  const int copies = static_cast<int>(std::max<int64_t>(2, (int64_t{256} << 20) / (2 * layer) + 1));
  uint16_t *w, *head, *x, *y;
  CK(cudaMalloc(&w, copies * layer * 2));
  CK(cudaMalloc(&head, V * C * 2));
  CK(cudaMalloc(&x, std::max(QD, F) * 2));
  CK(cudaMalloc(&y, std::max({2 * F, QD + 2 * KD, V}) * 4));
  fill_random_bf16<<<1024, 256>>>(w, copies * layer, 1);
  fill_random_bf16<<<1024, 256>>>(head, V * C, 2);
  fill_random_bf16<<<64, 256>>>(x, std::max(QD, F), 3);
  CK(cudaGetLastError());
  cuda::Blas blas;
  auto step = [&](bool fused, bool gemv) {
    auto mm = [&](const uint16_t* wt, int64_t K, int64_t N) {
      if (gemv) cuda::gemv_bf16(y, DType::BF16, x, wt, nullptr, 1, K, N, nullptr);
      else blas.matmul_forward(y, x, wt, 1, K, N, nullptr);
    };
    for (int l = 0; l < c.n_layer; ++l) {
      const uint16_t* p = w + (l % copies) * layer;
      if (fused) {
        mm(p, C, QD + 2 * KD);
      } else {
        blas.matmul_forward(y, x, p, 1, C, QD, nullptr);
        blas.matmul_forward(y, x, p + QD * C, 1, C, KD, nullptr);
        blas.matmul_forward(y, x, p + (QD + KD) * C, 1, C, KD, nullptr);
      }
      p += (QD + 2 * KD) * C;
      mm(p, QD, C);
      p += C * QD;
      if (fused) {
        mm(p, C, 2 * F);
      } else {
        blas.matmul_forward(y, x, p, 1, C, F, nullptr);
        blas.matmul_forward(y, x, p + F * C, 1, C, F, nullptr);
      }
      mm(p + 2 * F * C, F, C);
    }
    if (gemv) cuda::gemv_bf16(y, DType::F32, x, head, nullptr, 1, C, V, nullptr);
    else blas.matmul_forward(y, x, head, 1, C, V, nullptr);
  };
  const double sep = bench::median_event_seconds([&] { step(false, false); }, 3, 21);
  const double fus = bench::median_event_seconds([&] { step(true, false); }, 3, 21);
  const double gv = bench::median_event_seconds([&] { step(true, true); }, 3, 21);
  CK(cudaFree(w));
  CK(cudaFree(head));
  CK(cudaFree(x));
  CK(cudaFree(y));
  return {sep, fus, gv};
}

}  // namespace

int main(int argc, char** argv) {
  std::string config = "llama-3.2-1b", dir, json_out, precisions = "bf16,bf16-serial,bf16-apart,w4a16,w4a4,fp8";
  int prompt = 1024, decode = 128;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--config") config = v;
    else if (k == "--dir") dir = v;
    else if (k == "--precisions") precisions = v;
    else if (k == "--prompt") prompt = std::stoi(v);
    else if (k == "--decode") decode = std::stoi(v);
    else if (k == "--json") json_out = v;
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  const Shape* shape = nullptr;
  for (const auto& s : kShapes) {
    if (config == s.name) shape = &s;
  }
  if (!shape || dir.empty()) {
    std::fprintf(stderr, "usage: bench_infer --config llama-3.1-8b|llama-3.2-1b --dir DIR [...]\n");
    return 2;
  }
  try {
    if (!fs::exists(fs::path(dir) / "model.safetensors")) {
      const auto t0 = std::chrono::steady_clock::now();
      write_model(*shape, dir);
      std::printf("wrote %s in %.1f s\n", dir.c_str(),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    const double bw = copy_gbps();
    const double tf = gemm_tflops(prompt, shape->inter, shape->hidden);
    const infer::HfModel m = infer::HfModel::open(dir);
    const model::ModelConfig& c = m.config();
    // Bytes a BF16 decode step reads: every linear weight once (embedding: one row), the norms,
    // and the KV cache of the context.
    // A precision's own bound counts its layers' weights at their bytes a parameter (NVFP4: 4 bits
    // and an E4M3 scale per 16, 0.5625; FP8 1), the head BF16 unless it is quantized too.
    double weight_bytes = 0, matmul_params = 0, layer_params = 0;
    for (const auto& s : m.specs()) {
      const bool embed = s.name == "model.embed_tokens.weight", head = s.name == "lm_head.weight" || (embed && c.tie_embeddings);
      if (embed && !c.tie_embeddings) continue;
      weight_bytes += 2.0 * s.numel;
      if (s.shape.size() == 2) matmul_params += s.numel;
      if (s.shape.size() == 2 && !head) layer_params += s.numel;
    }
    const double head_params = matmul_params - layer_params;
    const double kv_row = 2.0 * c.n_layer * c.n_kv_head * c.head_size() * 2;  // K and V, BF16, per position
    const double ctx_mid = 16 + decode / 2.0;
    const double bound_s = (weight_bytes + kv_row * ctx_mid) / (bw * 1e9);
    const auto own_bound_s = [&](infer::Precision p, bool head_too) {
      const double per = p == infer::Precision::w4a16 || p == infer::Precision::w4a4 ? 0.5625
                         : p == infer::Precision::fp8                                ? 1.0
                                                                                     : 2.0;
      const double quantized = layer_params + (head_too ? head_params : 0.0);
      return (weight_bytes - 2.0 * quantized + per * quantized + kv_row * ctx_mid) / (bw * 1e9);
    };
    const double prefill_flops = 2.0 * matmul_params * prompt +
                                 2.0 * 2.0 * c.n_layer * c.n_head * c.head_size() * prompt * (prompt + 1) / 2.0;
    const double prefill_s = prefill_flops / (tf * 1e12);
    std::printf("%s: copy %.0f GB/s, cuBLAS BF16 %.0f TFLOP/s (%dx%dx%d); bf16 decode bound %.3f ms/token "
                "(%.2f GB), prefill %d tokens at that rate %.2f ms\n",
                config.c_str(), bw, tf, prompt, shape->inter, shape->hidden, bound_s * 1e3, weight_bytes / 1e9, prompt,
                prefill_s * 1e3);
    const auto [gemm_s, gemm_fused_s, gemv_s] = decode_gemm_seconds(c);
    std::printf("bf16 decode GEMMs alone (one token, weights not in L2): cuBLAS %.3f ms/token = %.1f %% of the "
                "bound; q/k/v and gate/up fused %.3f ms (%.1f %%); fused with gemv_bf16 %.3f ms (%.1f %%)\n",
                gemm_s * 1e3, 100.0 * bound_s / gemm_s, gemm_fused_s * 1e3, 100.0 * bound_s / gemm_fused_s,
                gemv_s * 1e3, 100.0 * bound_s / gemv_s);
    nlohmann::ordered_json out;
    out["config"] = config;
    out["bf16_decode_gemms_ms"] = gemm_s * 1e3;
    out["bf16_decode_gemms_fused_ms"] = gemm_fused_s * 1e3;
    out["bf16_decode_gemv_fused_ms"] = gemv_s * 1e3;
    out["copy_gbps"] = bw;
    out["cublas_bf16_tflops"] = tf;
    out["bf16_decode_bound_ms"] = bound_s * 1e3;
    out["prefill_flop_time_ms"] = prefill_s * 1e3;
    auto rows = nlohmann::ordered_json::array();
    std::stringstream ps(precisions);
    std::string p;
    std::printf("%-12s %10s %10s %9s %9s %8s %10s %9s %10s\n", "prec", "tok/s", "ITL ms", "vs bound", "vs own", "x bf16",
                "TTFT ms", "vs FLOP", "mem GiB");
    double bf16_itl = 0;  // the first bf16 row's, for the ratio of the rows after it
    while (std::getline(ps, p, ',')) {
      infer::EngineOptions o;
      std::string base = p;
      bool apart = false, serial = false, decoded = false, head = false, prefill = false;
      for (bool more = true; more;) {
        const auto strip = [&](const std::string& suffix) {
          const bool has = base.size() > suffix.size() && base.ends_with(suffix);
          if (has) base.resize(base.size() - suffix.size());
          return has;
        };
        const bool a = strip("-apart"), s = strip("-serial"), d = strip("-decoded"), h = strip("-head"),
                   f = strip("-prefill");
        apart = apart || a;
        serial = serial || s;
        decoded = decoded || d;
        head = head || h;
        prefill = prefill || f;
        more = a || s || d || h || f;
      }
      o.precision = infer::parse_precision(base);
      o.fuse = !apart;
      o.fused_nvfp4 = !decoded;
      o.quantize_lm_head = head;
      o.fused_nvfp4_prefill = prefill;
      cuda::set_dependent_launch(!serial);
      o.max_sequences = 1;
      o.max_context = prompt + decode + 32;
      const auto e = infer::make_cuda_engine(m, o);
      std::mt19937 rng(7);
      std::vector<int32_t> ids(static_cast<size_t>(prompt));
      for (auto& x : ids) x = static_cast<int32_t>(rng() % 128000);
      std::vector<float> logits;
      // TTFT: the prompt's prefill and its last logits, median of 5 after a warm-up.
      std::vector<double> ttft;
      for (int r = 0; r < 6; ++r) {
        e->reset(0);
        const infer::SeqChunk ch{0, ids, false};
        const auto t0 = std::chrono::steady_clock::now();
        e->forward(std::span<const infer::SeqChunk>(&ch, 1), logits);
        if (r) ttft.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      // Decode: 16 prompt tokens, then `decode` steps of one token, each timed to its logits.
      e->reset(0);
      const infer::SeqChunk pre{0, std::span<const int32_t>(ids.data(), 16), false};
      e->forward(std::span<const infer::SeqChunk>(&pre, 1), logits);
      std::vector<double> steps;
      for (int s = 0; s < decode; ++s) {
        const infer::SeqChunk ch{0, std::span<const int32_t>(&ids[16 + s], 1), false};
        const auto t0 = std::chrono::steady_clock::now();
        e->forward(std::span<const infer::SeqChunk>(&ch, 1), logits);
        steps.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      const double itl = median(steps), t1 = median(ttft), own = own_bound_s(o.precision, head);
      if (p == "bf16") bf16_itl = itl;
      std::printf("%-12s %10.1f %10.3f %8.1f%% %8.1f%% %7.2fx %10.2f %8.2fx %10.2f\n", p.c_str(), 1.0 / itl, itl * 1e3,
                  100.0 * bound_s / itl, 100.0 * own / itl, bf16_itl > 0 ? bf16_itl / itl : 0.0, t1 * 1e3, t1 / prefill_s,
                  e->memory_bytes() / 1073741824.0);
      rows.push_back({{"precision", p}, {"decode_tokens_per_s", 1.0 / itl}, {"itl_ms", itl * 1e3},
                      {"fraction_of_bf16_bound", bound_s / itl}, {"own_bound_ms", own * 1e3},
                      {"fraction_of_own_bound", own / itl}, {"ttft_ms", t1 * 1e3},
                      {"ttft_over_flop_time", t1 / prefill_s}, {"engine_bytes", e->memory_bytes()}});
    }
    cuda::set_dependent_launch(true);
    out["rows"] = rows;
    if (!json_out.empty()) std::ofstream(json_out) << out.dump(2) << "\n";
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_infer: %s\n", e.what());
    return 1;
  }
  return 0;
}
