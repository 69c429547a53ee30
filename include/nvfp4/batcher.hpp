// Continuous batching over an inference engine (nvfp4/engine.hpp): requests join the running
// batch at any engine step and leave it when they finish, as in vLLM and TGI. What `nvfp4 serve`
// runs on; usable without HTTP.
//
// One thread (the batcher's) owns the engine. Each step it
//   1. drops cancelled and timed-out requests (their KV blocks go back to the pool);
//   2. admits waiting requests first come, first served while a sequence slot is free and the KV
//      cache can hold the request's prompt + max_tokens next to every running request's (blocks are
//      reserved at admission, so a running request never meets a full cache: nothing is preempted);
//   3. runs one engine forward over one decode token of every running request plus prompt chunks
//      of the requests still prefilling, at most `max_step_tokens` tokens in all (chunked prefill:
//      a long prompt does not stall the others' decoding for its whole length);
//   4. samples each request's next token with its own seeded sampler, detokenizes, and hands the
//      requester the new text as it becomes final: whole UTF-8 characters only, and never text
//      that may still turn out to begin a stop string.
// Requests that cannot ever fit (prompt + max_tokens beyond the context or the whole KV cache) and
// requests arriving while the waiting queue is full or the batcher shuts down are rejected at
// submit() with a reason a server maps to its HTTP status.
//
// What it is not: a scheduler with priorities, preemption or prefix caching.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "nvfp4/engine.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/generate.hpp"
#include "nvfp4/sampling.hpp"

namespace nvfp4::infer {

class HfModel;

struct BatchRequest {
  std::vector<int32_t> prompt;      // token ids, at least one
  int max_tokens = 16;              // generated tokens at most
  int min_tokens = 0;               // end-of-text and stop strings are ignored before this many
  bool ignore_eos = false;          // end-of-text ids never end the request (they are not sampled)
  SamplingOptions sampling;         // temperature 0: greedy
  std::vector<std::string> stop;    // the text ends before the first one (not included)
  double timeout_s = 0;             // from submit() to the end; 0: none
  int keep_logits = 0;              // the logits (vocabulary rows, FP32) of the first N generated
                                    // tokens are kept in the result (the canary's KL)
  // Teacher forcing: the request emits these tokens instead of sampling (max_tokens = their count;
  // end-of-text does not end it) and counts how often its own choice, by `sampling`, agrees —
  // the canary runs another model over the primary's output this way.
  std::vector<int32_t> forced;
};

// What a request's stream yields, in order: text pieces, then exactly one final event.
struct BatchEvent {
  enum class Kind { text, finished, failed };
  Kind kind = Kind::text;
  std::string text;            // text: the new text (may be empty when a token adds no whole character)
  int32_t token = -1;          // text: the token that produced it
  std::string finish_reason;   // finished: "stop" (end-of-text or a stop string), "length",
                               // "cancelled", "timeout"; failed: the error message
};

// A finished request's account, for telemetry and logs.
struct BatchRequestStats {
  int prompt_tokens = 0;
  int generated_tokens = 0;
  double queue_s = 0;             // submit to admission
  double ttft_s = 0;              // submit to the first generated token (0 when none)
  double e2e_s = 0;               // submit to the end
  std::vector<double> itl_s;      // gaps between successive generated tokens
  std::string finish_reason;      // as the final event's ("failed" for a failure)
  std::vector<int32_t> tokens;    // generated
  std::vector<std::vector<float>> logits;  // keep_logits rows of vocabulary floats
  int forced_agreed = 0;          // forced tokens the request's own choice agreed with
};

// The requester's end of one request: events to wait for, and cancellation.
class RequestStream {
 public:
  // The next event; false when `timeout` passed first. After the final event, further calls
  // return false at once.
  bool next(BatchEvent& e, std::chrono::milliseconds timeout);
  // Ends the request at the batcher's next step ("cancelled"; a client that went away).
  void cancel();
  bool cancelled() const;
  // Valid once the final event was taken.
  const BatchRequestStats& stats() const { return stats_; }
  uint64_t id() const { return id_; }

 private:
  friend class Batcher;
  void push(BatchEvent e);
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<BatchEvent> events_;
  bool cancelled_ = false, ended_ = false, final_taken_ = false;
  BatchRequestStats stats_;
  uint64_t id_ = 0;
};

struct BatcherOptions {
  int max_queue = 256;          // waiting requests at most; more are rejected (queue_full)
  int max_step_tokens = 2048;   // tokens one engine step runs at most (decodes + prefill chunks)
};

// Why submit() refused a request.
class Rejected : public Error {
 public:
  enum class Reason { invalid, too_long, queue_full, shutting_down };
  Rejected(Reason r, const std::string& message) : Error(message), reason_(r) {}
  Reason reason() const { return reason_; }

 private:
  Reason reason_;
};

// A snapshot for /metrics and /health.
struct BatcherStats {
  int running = 0, waiting = 0;
  int kv_blocks = 0, kv_free_blocks = 0, kv_reserved_blocks = 0;
  int64_t steps = 0, step_tokens = 0, generated_tokens = 0, prompt_tokens = 0;
  int64_t finished = 0, failed = 0, rejected = 0;
  GuardStats guard;            // the w4a4 outlier guard's counts since the batcher started
  bool accepting = true;
};

// Told of each finished request (called on the batcher's thread: keep it short).
struct BatcherObserver {
  virtual ~BatcherObserver() = default;
  virtual void on_finished(const BatchRequestStats& s) = 0;
  // One engine step: its forward's seconds, the tokens it ran, its sequences, the tokens sampled.
  virtual void on_step(double seconds, int tokens, int sequences, int sampled) = 0;
};

class Batcher {
 public:
  // `engine` and `model` must outlive the batcher. Its slots are the engine's max_sequences().
  Batcher(Engine& engine, const HfModel& model, const BatcherOptions& o, BatcherObserver* observer = nullptr);
  ~Batcher();  // shutdown(0) then joins the thread
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Queues a request. Throws Rejected (the request is not queued) for an invalid one (no tokens,
  // a token outside the vocabulary, max_tokens < 1, min_tokens > max_tokens, bad sampling options),
  // one that can never fit (too_long, naming the limit), a full queue or a batcher shutting down.
  std::shared_ptr<RequestStream> submit(BatchRequest r);

  // Stops accepting; in-flight requests may finish for `grace_s` seconds, then the rest are
  // cancelled. Returns when none is left. Safe to call more than once.
  void shutdown(double grace_s);

  BatcherStats stats() const;
  int max_context() const;
  int vocab() const;  // ids a prompt may hold: the tokenizer's vocabulary (or the model's)

 private:
  struct Active;
  void loop();
  bool step();  // one engine step; false when there was nothing to run
  void finish(Active& a, BatchEvent::Kind kind, const std::string& reason);
  int blocks_for(int64_t tokens) const;

  Engine& engine_;
  const HfModel& model_;
  BatcherOptions o_;
  BatcherObserver* observer_;
  std::vector<int32_t> eos_;
  int32_t vocab_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Active>> waiting_;
  std::vector<std::unique_ptr<Active>> running_;  // owned by the loop thread once admitted
  std::vector<bool> slot_used_;
  int reserved_blocks_ = 0;
  bool accepting_ = true, stop_ = false;
  std::chrono::steady_clock::time_point grace_end_{};
  bool grace_set_ = false;
  uint64_t next_id_ = 1;
  uint64_t seed_base_ = 0;
  BatcherStats stats_;
  std::thread thread_;
};

}  // namespace nvfp4::infer
