// Perplexity, KL and per-layer sensitivity (include/nvfp4/evaluate.hpp).
#include "nvfp4/evaluate.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "kernels/cpu/ops_common.hpp"  // NVFP4_OMP
#include "nvfp4/error.hpp"

namespace nvfp4::infer {

namespace {

// log-sum-exp of a row, in double.
double log_sum_exp(std::span<const float> x) {
  double m = -INFINITY;
  for (float v : x) m = std::max(m, static_cast<double>(v));
  double s = 0;
  for (float v : x) s += std::exp(static_cast<double>(v) - m);
  return m + std::log(s);
}

size_t argmax(std::span<const float> x) {
  return static_cast<size_t>(std::max_element(x.begin(), x.end()) - x.begin());
}

// "a.txt, token 17" (or "document 3, token 17" for a document without a name).
std::string where(std::span<const EvalDocument> docs, size_t doc, int64_t token) {
  const std::string& n = docs[doc].name;
  return (n.empty() ? "document " + std::to_string(doc) : n) + ", token " + std::to_string(token);
}

[[noreturn]] void non_finite_logits(const std::string& at, const std::string& whose) {
  throw Error("eval: " + at + ": " + whose + " logits are NaN or infinite: the activations overflow (try another "
              "precision, keep the overflowing layers unquantized with --keep-bf16, or check the model's weights)");
}

// Runs windows through an engine in batches (one slot each, fresh), calling fn(window index,
// logits of its tokens (len, V)) for each.
template <typename Fn>
void run_windows(Engine& e, std::span<const EvalDocument> docs, std::span<const EvalWindow> w, Fn&& fn,
                 const std::function<void(int64_t)>& done) {
  const int64_t V = e.config().vocab;
  int64_t ctx = 1;
  for (const auto& x : w) ctx = std::max(ctx, x.end - x.begin);
  // At most ~1 GiB of logits per forward.
  const int64_t per_batch = std::max<int64_t>(1, std::min<int64_t>(e.max_sequences(), (int64_t{1} << 28) / (ctx * V)));
  std::vector<float> logits;
  std::vector<SeqChunk> chunks;
  for (size_t first = 0; first < w.size(); first += static_cast<size_t>(per_batch)) {
    const size_t last = std::min(w.size(), first + static_cast<size_t>(per_batch));
    chunks.clear();
    for (size_t i = first; i < last; ++i) {
      const int slot = static_cast<int>(i - first);
      e.reset(slot);
      const auto& ids = docs[w[i].doc].ids;
      chunks.push_back({slot, std::span<const int32_t>(ids.data() + w[i].begin, static_cast<size_t>(w[i].end - w[i].begin)),
                        true});
    }
    e.forward(chunks, logits);
    size_t row = 0;
    for (size_t i = first; i < last; ++i) {
      const int64_t len = w[i].end - w[i].begin;
      fn(i, std::span<const float>(logits.data() + row * V, static_cast<size_t>(len * V)));
      row += static_cast<size_t>(len);
    }
    if (done) done(static_cast<int64_t>(last));
  }
}

}  // namespace

double token_nll(std::span<const float> logits, int32_t target) {
  return log_sum_exp(logits) - static_cast<double>(logits[static_cast<size_t>(target)]);
}

double kl_divergence(std::span<const float> ref, std::span<const float> x) {
  const double lr = log_sum_exp(ref), lx = log_sum_exp(x);
  double kl = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double a = static_cast<double>(ref[i]) - lr;  // log p_ref
    const double b = static_cast<double>(x[i]) - lx;    // log p
    kl += std::exp(a) * (a - b);
  }
  return std::max(kl, 0.0);
}

std::vector<EvalWindow> sliding_windows(std::span<const EvalDocument> docs, int ctx, int stride) {
  if (ctx < 2) throw Error("--ctx " + std::to_string(ctx) + " must be >= 2");
  if (stride < 1 || stride > ctx) {
    throw Error("--stride " + std::to_string(stride) + " must be in [1, --ctx = " + std::to_string(ctx) + "]");
  }
  std::vector<EvalWindow> w;
  for (size_t d = 0; d < docs.size(); ++d) {
    const int64_t n = static_cast<int64_t>(docs[d].ids.size());
    // Tokens [s, e) are scored by a window ending at e that starts ctx tokens before (at least
    // one token of context before s): the first window ctx - 1 of them, each next one at most
    // min(stride, ctx - 1).
    for (int64_t s = 1; s < n;) {
      const int64_t fresh = s == 1 ? ctx - 1 : std::min<int64_t>(stride, ctx - 1);
      const int64_t e = std::min(n, s + fresh);
      w.push_back({d, std::max<int64_t>(0, e - ctx), e, s});
      s = e;
    }
  }
  return w;
}

EvalResult evaluate(Engine& engine, Engine* reference, std::span<const EvalDocument> docs, const EvalOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const int ctx = o.ctx > 0 ? o.ctx : engine.max_context();
  if (ctx > engine.max_context() || (reference && ctx > reference->max_context())) {
    throw Error("--ctx " + std::to_string(ctx) + " exceeds the engine's context of " +
                std::to_string(engine.max_context()) + " tokens");
  }
  const int stride = o.stride > 0 ? o.stride : ctx;
  const std::vector<EvalWindow> windows = sliding_windows(docs, ctx, stride);
  if (windows.empty()) throw Error("eval: nothing to score (every document has fewer than 2 tokens)");
  const int64_t V = engine.config().vocab;
  std::vector<size_t> quantized;  // --per-layer: the engine's quantized layers
  if (o.per_layer) {
    const auto& plan = engine.linear_plan();
    for (size_t i = 0; i < plan.size(); ++i) {
      if (is_quantized(plan[i].precision)) quantized.push_back(i);
    }
    if (quantized.empty()) throw Error("--per-layer: no linear layer is quantized (choose --precision w4a16, w4a4 or fp8)");
  }
  EvalResult r;
  r.windows = static_cast<int64_t>(windows.size());
  engine.reset_guard_stats();

  // Reference logits of one batch are kept until the engine's run of the same windows.
  double nll_sum = 0, ref_nll_sum = 0, kl_sum = 0;
  int64_t agree = 0;
  const int64_t total = static_cast<int64_t>(windows.size());
  const size_t batch = static_cast<size_t>(std::max(1, engine.max_sequences()));
  std::vector<std::vector<float>> ref_logits;
  for (size_t first = 0; first < windows.size(); first += batch) {
    const auto part = std::span<const EvalWindow>(windows).subspan(first, std::min(batch, windows.size() - first));
    if (reference) {
      ref_logits.assign(part.size(), {});
      run_windows(*reference, docs, part, [&](size_t i, std::span<const float> l) { ref_logits[i].assign(l.begin(), l.end()); },
                  nullptr);
    }
    run_windows(engine, docs, part, [&](size_t i, std::span<const float> l) {
      const EvalWindow& w = part[i];
      const auto& ids = docs[w.doc].ids;
      // Each position's numbers on its own (threads over positions: a 128k-entry vocabulary makes
      // them the cost of a CUDA evaluation), then added in position order: the same sums for any
      // thread count.
      const int64_t P = w.end - w.score_from;
      std::vector<double> nll(static_cast<size_t>(P)), ref_nll(reference ? nll.size() : 0), kl(ref_nll.size());
      std::vector<uint8_t> same(ref_nll.size());
      NVFP4_OMP("omp parallel for schedule(dynamic, 8)")
      for (int64_t j = 0; j < P; ++j) {
        const int64_t p = w.score_from + j;
        const size_t row = static_cast<size_t>(p - 1 - w.begin);
        const auto x = l.subspan(row * V, static_cast<size_t>(V));
        nll[j] = token_nll(x, ids[p]);
        if (reference) {
          const auto y = std::span<const float>(ref_logits[i]).subspan(row * V, static_cast<size_t>(V));
          ref_nll[j] = token_nll(y, ids[p]);
          kl[j] = kl_divergence(y, x);
          same[j] = argmax(x) == argmax(y);
        }
      }
      for (int64_t j = 0; j < P; ++j) {
        const int64_t p = w.score_from + j;
        if (!std::isfinite(nll[j])) non_finite_logits(where(docs, w.doc, p), "the model's");
        nll_sum += nll[j];
        ++r.tokens;
        if (reference) {
          if (!std::isfinite(ref_nll[j])) non_finite_logits(where(docs, w.doc, p), "the --reference engine's");
          if (!std::isfinite(kl[j])) non_finite_logits(where(docs, w.doc, p), "the model's or the --reference engine's");
          ref_nll_sum += ref_nll[j];
          kl_sum += kl[j];
          agree += same[j];
        }
      }
    }, nullptr);
    if (o.progress) o.progress(static_cast<int64_t>(first + part.size()), total, "windows");
  }
  r.nll = nll_sum / static_cast<double>(r.tokens);
  r.ppl = std::exp(r.nll);
  bool bytes_known = true;
  for (const auto& d : docs) {
    if (d.bytes < 0) bytes_known = false;
    else r.bytes += d.bytes;
  }
  if (bytes_known && r.bytes > 0) r.bits_per_byte = nll_sum / std::log(2.0) / static_cast<double>(r.bytes);
  if (reference) {
    r.kl_mean = kl_sum / static_cast<double>(r.tokens);
    r.top1_agree = static_cast<double>(agree) / static_cast<double>(r.tokens);
    r.reference_nll = ref_nll_sum / static_cast<double>(r.tokens);
  }
  r.guard = engine.guard_stats();

  if (o.per_layer) {
    // The first windows, cut after per_layer_tokens scored tokens (a window ending early scores
    // the same tokens with the same context: each token sees only the ones before it).
    std::vector<EvalWindow> pw;
    int64_t covered = 0;
    for (const auto& w : windows) {
      if (covered >= o.per_layer_tokens) break;
      EvalWindow cut = w;
      cut.end = std::min(w.end, w.score_from + (o.per_layer_tokens - covered));
      pw.push_back(cut);
      covered += cut.end - cut.score_from;
    }
    const std::vector<LinearPlan> plan = engine.linear_plan();
    const Precision base = engine.device() == "cpu" ? Precision::fp32 : Precision::bf16;
    std::vector<Precision> original, all_base(plan.size(), base);
    for (const auto& p : plan) original.push_back(p.precision);
    r.per_layer_precision = plan[quantized[0]].precision;
    r.per_layer_base = base;
    auto collect = [&](std::vector<std::vector<float>>& out) {
      out.assign(pw.size(), {});
      run_windows(engine, docs, pw, [&](size_t i, std::span<const float> l) { out[i].assign(l.begin(), l.end()); }, nullptr);
    };
    try {
      engine.set_linear_precisions(all_base);
      std::vector<std::vector<float>> base_logits, q_logits;
      collect(base_logits);
      std::vector<float> y_ref, y_q;
      for (size_t n = 0; n < quantized.size(); ++n) {
        const size_t i = quantized[n];
        y_ref.clear();
        y_q.clear();
        engine.capture_linear_output(i, &y_ref);
        std::vector<std::vector<float>> discard;
        collect(discard);
        std::vector<Precision> one = all_base;
        one[i] = original[i];
        engine.set_linear_precisions(one);
        engine.capture_linear_output(i, &y_q);
        collect(q_logits);
        engine.capture_linear_output(i, nullptr);
        engine.set_linear_precisions(all_base);
        double kl = 0;
        int64_t count = 0;
        for (size_t k = 0; k < pw.size(); ++k) {
          for (int64_t p = pw[k].score_from; p < pw[k].end; ++p) {
            const size_t row = static_cast<size_t>(p - 1 - pw[k].begin);
            const double d = kl_divergence(std::span<const float>(base_logits[k]).subspan(row * V, static_cast<size_t>(V)),
                                           std::span<const float>(q_logits[k]).subspan(row * V, static_cast<size_t>(V)));
            if (!std::isfinite(d)) {
              non_finite_logits(where(docs, pw[k].doc, p), "--per-layer: with only " + plan[i].name + " at " +
                                                               std::string(precision_name(original[i])) + " the");
            }
            kl += d;
            ++count;
          }
        }
        double num = 0, den = 0;
        for (size_t k = 0; k < y_ref.size() && k < y_q.size(); ++k) {
          const double d = static_cast<double>(y_q[k]) - y_ref[k];
          num += d * d;
          den += static_cast<double>(y_ref[k]) * y_ref[k];
        }
        LayerSensitivity s;
        s.name = plan[i].name;
        s.kl_mean = kl / static_cast<double>(std::max<int64_t>(count, 1));
        s.rel_error = den > 0 ? std::sqrt(num / den) : 0.0;
        s.flagged = s.kl_mean > o.flag_kl;
        r.per_layer.push_back(s);
        if (o.progress) o.progress(static_cast<int64_t>(n + 1), static_cast<int64_t>(quantized.size()), "layers");
      }
    } catch (...) {
      engine.capture_linear_output(0, nullptr);
      engine.set_linear_precisions(original);
      throw;
    }
    engine.set_linear_precisions(original);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace nvfp4::infer
