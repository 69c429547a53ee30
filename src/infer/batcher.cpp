// Continuous batching (include/nvfp4/batcher.hpp).
#include "nvfp4/batcher.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "nvfp4/hf_model.hpp"

namespace nvfp4::infer {

using clock = std::chrono::steady_clock;

namespace {

double seconds_between(clock::time_point a, clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Bytes at the end of `s` that start a UTF-8 character not yet complete (0 when it ends whole).
size_t incomplete_utf8_tail(const std::string& s) {
  const size_t n = s.size();
  for (size_t back = 1; back <= 4 && back <= n; ++back) {
    const auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    size_t need = 1;
    if ((c & 0xE0) == 0xC0) need = 2;
    else if ((c & 0xF0) == 0xE0) need = 3;
    else if ((c & 0xF8) == 0xF0) need = 4;
    return need > back ? back : 0;
  }
  return 0;  // only continuation bytes (invalid text): nothing to wait for
}

// Length of the longest suffix of s[0, end) that is a proper prefix of one of `stops`.
size_t stop_prefix_tail(const std::string& s, size_t end, const std::vector<std::string>& stops) {
  size_t best = 0;
  for (const auto& stop : stops) {
    for (size_t k = std::min(stop.size() - 1, end); k > best; --k) {
      if (s.compare(end - k, k, stop, 0, k) == 0) {
        best = k;
        break;
      }
    }
  }
  return best;
}

}  // namespace

// ---- RequestStream -----------------------------------------------------------------------------

bool RequestStream::next(BatchEvent& e, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return !events_.empty() || final_taken_; })) return false;
  if (events_.empty()) return false;
  e = std::move(events_.front());
  events_.pop_front();
  if (e.kind != BatchEvent::Kind::text) final_taken_ = true;
  return true;
}

void RequestStream::cancel() {
  std::lock_guard<std::mutex> lock(mu_);
  cancelled_ = true;
}

bool RequestStream::cancelled() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cancelled_;
}

void RequestStream::push(BatchEvent e) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (e.kind != BatchEvent::Kind::text) ended_ = true;
    events_.push_back(std::move(e));
  }
  cv_.notify_all();
}

// ---- Batcher -----------------------------------------------------------------------------------

struct Batcher::Active {
  std::shared_ptr<RequestStream> stream;
  BatchRequest req;
  int slot = -1;
  int reserved = 0;
  size_t prefilled = 0;  // prompt tokens in the cache
  Sampler sampler;
  std::vector<int32_t> generated;
  std::string text;      // the generated tokens decoded
  size_t emitted = 0;    // bytes of text handed out
  int32_t next_input = -1;
  clock::time_point submitted, admitted, last_token;
  clock::time_point deadline = clock::time_point::max();
  bool done = false;
  BatchRequestStats stats;
  explicit Active(const SamplingOptions& s) : sampler(s) {}
};

Batcher::Batcher(Engine& engine, const HfModel& model, const BatcherOptions& o, BatcherObserver* observer)
    : engine_(engine), model_(model), o_(o), observer_(observer) {
  if (o.max_queue < 0) throw Error("--max-queue " + std::to_string(o.max_queue) + " must be >= 0");
  if (o.max_step_tokens < 1) throw Error("--max-tokens " + std::to_string(o.max_step_tokens) + " must be >= 1");
  eos_ = model.eos_ids();
  const int32_t V = engine.config().vocab;
  vocab_ = model.has_tokenizer() ? std::min(V, model.tokenizer().vocab_size()) : V;
  slot_used_.assign(static_cast<size_t>(engine.max_sequences()), false);
  seed_base_ = std::random_device{}();
  stats_.kv_blocks = engine.kv_blocks();
  stats_.kv_free_blocks = engine.kv_free_blocks();
  thread_ = std::thread([this] { loop(); });
}

Batcher::~Batcher() {
  shutdown(0);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

int Batcher::max_context() const { return engine_.max_context(); }
int Batcher::vocab() const { return vocab_; }

int Batcher::blocks_for(int64_t tokens) const {
  const int64_t b = engine_.kv_block_size();
  return static_cast<int>((tokens + b - 1) / b);
}

std::shared_ptr<RequestStream> Batcher::submit(BatchRequest r) {
  using R = Rejected::Reason;
  auto reject = [&](R reason, const std::string& msg) {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.rejected;
    return Rejected(reason, msg);
  };
  if (r.prompt.empty()) throw reject(R::invalid, "the prompt has no tokens");
  for (size_t i = 0; i < r.prompt.size(); ++i) {
    if (r.prompt[i] < 0 || r.prompt[i] >= vocab_) {
      throw reject(R::invalid, "prompt token " + std::to_string(i) + " is " + std::to_string(r.prompt[i]) +
                                   ", outside the vocabulary [0, " + std::to_string(vocab_) + ")");
    }
  }
  if (r.max_tokens < 1) throw reject(R::invalid, "max_tokens " + std::to_string(r.max_tokens) + " must be >= 1");
  if (r.min_tokens < 0 || r.min_tokens > r.max_tokens) {
    throw reject(R::invalid, "min_tokens " + std::to_string(r.min_tokens) + " must be in [0, max_tokens]");
  }
  for (const auto& s : r.stop) {
    if (s.empty()) throw reject(R::invalid, "stop: an empty stop string would end every generation at once");
  }
  if (!(r.timeout_s >= 0) || r.keep_logits < 0) throw reject(R::invalid, "timeout and kept logits must be >= 0");
  for (size_t i = 0; i < r.forced.size(); ++i) {
    if (r.forced[i] < 0 || r.forced[i] >= vocab_) {
      throw reject(R::invalid, "forced token " + std::to_string(i) + " is outside the vocabulary [0, " + std::to_string(vocab_) + ")");
    }
  }
  if (!r.forced.empty()) {
    r.max_tokens = static_cast<int>(r.forced.size());
    r.min_tokens = 0;
    r.ignore_eos = true;
    r.stop.clear();
  }
  try {
    validate(r.sampling);
  } catch (const Error& e) {
    throw reject(R::invalid, e.what());
  }
  const int64_t total = static_cast<int64_t>(r.prompt.size()) + r.max_tokens;
  if (total > engine_.max_context()) {
    throw reject(R::too_long, "the prompt's " + std::to_string(r.prompt.size()) + " tokens + max_tokens " +
                                  std::to_string(r.max_tokens) + " exceed the context of " +
                                  std::to_string(engine_.max_context()) + " tokens (shorten the prompt or lower max_tokens)");
  }
  const int need = blocks_for(total);
  if (need > engine_.kv_blocks()) {
    throw reject(R::too_long, "the prompt's " + std::to_string(r.prompt.size()) + " tokens + max_tokens " +
                                  std::to_string(r.max_tokens) + " need " + std::to_string(need) +
                                  " KV cache blocks; the cache holds " + std::to_string(engine_.kv_blocks()) +
                                  " (lower max_tokens, or start the server with a larger KV cache)");
  }

  const auto now = clock::now();
  auto a = std::make_unique<Active>(r.sampling);
  a->stream = std::make_shared<RequestStream>();
  a->reserved = need;
  a->submitted = now;
  if (r.timeout_s > 0) {
    a->deadline = now + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(r.timeout_s));
  }
  a->stats.prompt_tokens = static_cast<int>(r.prompt.size());
  a->req = std::move(r);
  std::shared_ptr<RequestStream> s = a->stream;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!accepting_) {
      ++stats_.rejected;
      throw Rejected(R::shutting_down, "the server is shutting down");
    }
    if (static_cast<int>(waiting_.size()) >= o_.max_queue) {
      ++stats_.rejected;
      throw Rejected(R::queue_full, "the waiting queue is full (" + std::to_string(o_.max_queue) +
                                        " requests); retry later");
    }
    s->id_ = next_id_++;
    waiting_.push_back(std::move(a));
    stats_.waiting = static_cast<int>(waiting_.size());
  }
  cv_.notify_all();
  return s;
}

void Batcher::shutdown(double grace_s) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    accepting_ = false;
    stats_.accepting = false;
    const auto end = clock::now() + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(std::max(0.0, grace_s)));
    if (!grace_set_ || end < grace_end_) grace_end_ = end;
    grace_set_ = true;
  }
  cv_.notify_all();
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (waiting_.empty() && running_.empty()) return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

BatcherStats Batcher::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Batcher::finish(Active& a, BatchEvent::Kind kind, const std::string& reason) {
  if (a.done) return;
  a.done = true;
  const auto now = clock::now();
  // Text held back (a possible stop-string start, a character not yet whole) is final now.
  if (kind == BatchEvent::Kind::finished && a.emitted < a.text.size()) {
    a.stream->push({BatchEvent::Kind::text, a.text.substr(a.emitted), -1, ""});
    a.emitted = a.text.size();
  }
  a.stats.generated_tokens = static_cast<int>(a.generated.size());
  a.stats.tokens = a.generated;
  a.stats.e2e_s = seconds_between(a.submitted, now);
  a.stats.finish_reason = kind == BatchEvent::Kind::failed ? "failed" : reason;
  if (a.slot < 0) a.stats.queue_s = a.stats.e2e_s;
  if (a.slot >= 0) engine_.reset(a.slot);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (a.slot >= 0) {
      --stats_.running;  // out of the batch now (running_ forgets it at the end of the step)
      slot_used_[static_cast<size_t>(a.slot)] = false;
      reserved_blocks_ -= a.reserved;
      stats_.kv_reserved_blocks = reserved_blocks_;
      stats_.kv_free_blocks = engine_.kv_free_blocks();
    }
    if (kind == BatchEvent::Kind::failed) ++stats_.failed;
    else ++stats_.finished;
    stats_.generated_tokens += static_cast<int64_t>(a.generated.size());
  }
  if (observer_) observer_->on_finished(a.stats);
  // Last: the requester may read stats() and the batcher's counts once it has the final event.
  a.stream->stats_ = a.stats;
  a.stream->push({kind, "", -1, reason});
}

void Batcher::loop() {
  for (;;) {
    if (step()) continue;
    std::unique_lock<std::mutex> lock(mu_);
    if (stop_ && running_.empty() && waiting_.empty()) return;
    // Nothing ran: wait for a request (a short wait: deadlines and cancellations are polled).
    cv_.wait_for(lock, std::chrono::milliseconds(20));
  }
}

bool Batcher::step() {
  const auto now = clock::now();
  // 1. Cancelled and timed-out requests leave; past the shutdown grace, every request does.
  std::vector<std::unique_ptr<Active>> dropped;
  bool past_grace;
  {
    std::lock_guard<std::mutex> lock(mu_);
    past_grace = grace_set_ && now >= grace_end_;
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      if (past_grace || (*it)->stream->cancelled() || now >= (*it)->deadline) {
        dropped.push_back(std::move(*it));
        it = waiting_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& a : dropped) finish(*a, BatchEvent::Kind::finished, now >= a->deadline ? "timeout" : "cancelled");
  for (auto& a : running_) {
    if (past_grace || a->stream->cancelled()) finish(*a, BatchEvent::Kind::finished, "cancelled");
    else if (now >= a->deadline) finish(*a, BatchEvent::Kind::finished, "timeout");
  }
  // 2. Admission, first come first served.
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::erase_if(running_, [](const std::unique_ptr<Active>& a) { return a->done; });
    while (!waiting_.empty()) {
      Active& a = *waiting_.front();
      if (reserved_blocks_ + a.reserved > engine_.kv_blocks()) break;
      const auto free_slot = std::find(slot_used_.begin(), slot_used_.end(), false);
      if (free_slot == slot_used_.end()) break;
      a.slot = static_cast<int>(free_slot - slot_used_.begin());
      *free_slot = true;
      reserved_blocks_ += a.reserved;
      a.admitted = now;
      a.stats.queue_s = seconds_between(a.submitted, now);
      running_.push_back(std::move(waiting_.front()));
      waiting_.pop_front();
    }
    stats_.waiting = static_cast<int>(waiting_.size());
    stats_.running = static_cast<int>(running_.size());
    stats_.kv_reserved_blocks = reserved_blocks_;
  }
  if (running_.empty()) return false;

  // 3. One engine step: a decode token of every request past its prompt, then prompt chunks.
  std::vector<SeqChunk> chunks;
  std::vector<Active*> owner;
  std::vector<int> chunk_tokens;
  int budget = o_.max_step_tokens, prompt_tokens = 0;
  for (auto& a : running_) {
    if (a->prefilled == a->req.prompt.size()) {
      chunks.push_back({a->slot, std::span<const int32_t>(&a->next_input, 1), false});
      owner.push_back(a.get());
      chunk_tokens.push_back(1);
      --budget;
    }
  }
  for (auto& a : running_) {
    if (a->prefilled == a->req.prompt.size() || budget <= 0) continue;
    const size_t n = std::min(a->req.prompt.size() - a->prefilled, static_cast<size_t>(budget));
    chunks.push_back({a->slot, std::span<const int32_t>(a->req.prompt.data() + a->prefilled, n), false});
    owner.push_back(a.get());
    chunk_tokens.push_back(static_cast<int>(n));
    budget -= static_cast<int>(n);
    prompt_tokens += static_cast<int>(n);
  }
  int tokens = 0;
  for (int n : chunk_tokens) tokens += n;
  std::vector<float> logits;
  const auto t0 = clock::now();
  try {
    engine_.forward(chunks, logits);
  } catch (const std::exception& e) {
    // The engine left its caches unchanged; the requests of this step cannot go on.
    for (Active* a : owner) finish(*a, BatchEvent::Kind::failed, std::string("the engine failed: ") + e.what());
    std::lock_guard<std::mutex> lock(mu_);
    std::erase_if(running_, [](const std::unique_ptr<Active>& a) { return a->done; });
    stats_.running = static_cast<int>(running_.size());
    return true;
  }
  const auto t1 = clock::now();

  // 4. Sampling, text, ends.
  const int32_t V = engine_.config().vocab;
  std::vector<float> row_copy;
  int sampled = 0;
  for (size_t c = 0; c < chunks.size(); ++c) {
    Active& a = *owner[c];
    if (a.prefilled < a.req.prompt.size()) {
      a.prefilled += static_cast<size_t>(chunk_tokens[c]);
      if (a.prefilled < a.req.prompt.size()) continue;  // more prompt to go: its logits are not needed
    }
    std::span<const float> row(logits.data() + c * static_cast<size_t>(V), static_cast<size_t>(vocab_));
    if (!std::all_of(row.begin(), row.end(), [](float x) { return std::isfinite(x); })) {
      finish(a, BatchEvent::Kind::failed,
             "the model's logits for generated token " + std::to_string(a.generated.size()) +
                 " are NaN or infinite: its activations overflow at this precision");
      continue;
    }
    if (static_cast<int>(a.stats.logits.size()) < a.req.keep_logits) a.stats.logits.emplace_back(row.begin(), row.end());
    const bool early = static_cast<int>(a.generated.size()) < a.req.min_tokens;
    if (a.req.ignore_eos || early) {
      row_copy.assign(row.begin(), row.end());
      for (int32_t e : eos_) {
        if (e >= 0 && e < vocab_) row_copy[static_cast<size_t>(e)] = -std::numeric_limits<float>::infinity();
      }
      row = row_copy;
    }
    int32_t t = a.sampler.next(row);
    ++sampled;
    if (a.generated.size() < a.req.forced.size()) {
      const int32_t f = a.req.forced[a.generated.size()];
      a.stats.forced_agreed += t == f;
      t = f;
    }
    const auto now_t = clock::now();
    if (a.generated.empty()) {
      a.stats.ttft_s = seconds_between(a.submitted, now_t);
    } else {
      a.stats.itl_s.push_back(seconds_between(a.last_token, now_t));
    }
    a.last_token = now_t;
    if (std::find(eos_.begin(), eos_.end(), t) != eos_.end()) {
      finish(a, BatchEvent::Kind::finished, "stop");
      // The end-of-text token is not text: what was held back is released by finish().
      continue;
    }
    a.generated.push_back(t);
    if (model_.has_tokenizer()) a.text = model_.tokenizer().decode(a.generated);
    const bool stops_apply = !a.req.stop.empty() && static_cast<int>(a.generated.size()) >= a.req.min_tokens;
    if (stops_apply) {
      size_t longest = 0;
      for (const auto& s : a.req.stop) longest = std::max(longest, s.size());
      const size_t from = a.emitted > longest ? a.emitted - longest : 0;
      size_t cut = std::string::npos;
      for (const auto& s : a.req.stop) cut = std::min(cut, a.text.find(s, from));
      if (cut != std::string::npos) {
        if (cut > a.emitted) a.stream->push({BatchEvent::Kind::text, a.text.substr(a.emitted, cut - a.emitted), t, ""});
        a.text.resize(std::max(cut, a.emitted));
        a.emitted = a.text.size();
        finish(a, BatchEvent::Kind::finished, "stop");
        continue;
      }
    }
    if (static_cast<int>(a.generated.size()) == a.req.max_tokens) {
      a.stream->push({BatchEvent::Kind::text, a.text.substr(a.emitted), t, ""});
      a.emitted = a.text.size();
      finish(a, BatchEvent::Kind::finished, "length");
      continue;
    }
    size_t safe = a.text.size() - incomplete_utf8_tail(a.text);
    if (!a.req.stop.empty()) safe -= stop_prefix_tail(a.text, safe, a.req.stop);
    safe = std::max(safe, a.emitted);
    a.stream->push({BatchEvent::Kind::text, a.text.substr(a.emitted, safe - a.emitted), t, ""});
    a.emitted = safe;
    a.next_input = t;
  }
  if (observer_) observer_->on_step(seconds_between(t0, t1), tokens, static_cast<int>(chunks.size()), sampled);
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::erase_if(running_, [](const std::unique_ptr<Active>& a) { return a->done; });
    ++stats_.steps;
    stats_.step_tokens += tokens;
    stats_.running = static_cast<int>(running_.size());
    stats_.kv_free_blocks = engine_.kv_free_blocks();
    stats_.kv_reserved_blocks = reserved_blocks_;
    stats_.guard = engine_.guard_stats();
    stats_.prompt_tokens += prompt_tokens;
  }
  return true;
}

}  // namespace nvfp4::infer
