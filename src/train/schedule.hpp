// Learning-rate schedules as data (style.md #4): a small struct, a pure function of the step,
// validation that names the bad field, a one-line description and a JSON form that a checkpoint
// stores so a resumed run continues on the same curve.
//
// ---- the formulas (W = warmup_steps, T = total_steps, peak = peak_lr, min = peak * min_lr_fraction)
//
// Steps are 0-based; training runs steps 0 .. T-1. Every phase reaches its end value exactly on
// its own last step, so no value repeats at a phase boundary:
//
//   warmup, 0 <= s < W:      lr = peak * (s + 1) / W            (llm.c's rule: s = 0 gives peak/W,
//                                                                 s = W-1 gives peak)
//   cosine, W <= s < T:      p  = (s - W + 1) / (T - W)          (p in (0, 1]; s = T-1 gives p = 1)
//                            lr = min + (peak - min) * 0.5 * (1 + cos(pi * p))
//   wsd, D = llround(decay_fraction * T) decay steps, decay starts at S = T - D:
//            W <= s < S:     lr = peak                           (the stable plateau)
//            S <= s < T:     p  = (s - S + 1) / D,  lr = peak - (peak - min) * p
//   constant, W <= s:        lr = peak
//   s >= T (past the end):   the value at s = T-1 (min for cosine with W < T and for wsd with
//                            D > 0; peak otherwise)
//
// So the last step (T-1) runs at min for cosine and for wsd with D > 0. With W = 0 the first
// cosine step is already slightly below peak (p = 1/T); llm.c's cosine starts its decay at p = 0
// instead and never quite reaches min.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace nvfp4::train {

struct LrSchedule {
  enum Kind { cosine, wsd, constant };
  Kind kind = cosine;
  double peak_lr = 3e-4;         // > 0 and finite
  int64_t warmup_steps = 0;      // 0 <= warmup_steps <= total_steps
  int64_t total_steps = 1;       // >= 1: the run's optimizer steps
  double min_lr_fraction = 0.1;  // in [0, 1]: the final lr is peak_lr * this (cosine, wsd)
  double decay_fraction = 0.2;   // in [0, 1]: wsd decays linearly over the last fraction of total_steps

  bool operator==(const LrSchedule&) const = default;

  // {"kind": "cosine", "peak_lr": ..., "warmup_steps": ..., "total_steps": ...,
  //  "min_lr_fraction": ..., "decay_fraction": ...}: every field always written, doubles with
  // round-trip precision (from_json_string gives back a bit-identical struct).
  std::string to_json_string() const;
  // Parses and validates that object. All six keys are required, no other keys are allowed;
  // every failure is an nvfp4::Error naming the key and what was expected.
  static LrSchedule from_json_string(std::string_view text);
};

// "cosine", "wsd", "constant".
const char* schedule_kind_name(LrSchedule::Kind kind);
// "cosine, wsd, constant": for --help and error messages.
std::string schedule_kind_names();

// Throws nvfp4::Error naming the field, its value and the valid range: peak_lr <= 0 or not
// finite, warmup_steps < 0, total_steps < 1, warmup_steps > total_steps, a fraction outside
// [0, 1] or NaN, and for wsd a warmup that runs into the decay (warmup_steps + decay steps >
// total_steps).
void validate(const LrSchedule& s);

// Builds and validates a schedule; `name` is one of schedule_kind_names() (exact, lower case),
// anything else is an nvfp4::Error listing the valid names.
LrSchedule parse_schedule(std::string_view name, double peak_lr, int64_t warmup_steps, int64_t total_steps,
                          double min_lr_fraction = 0.1, double decay_fraction = 0.2);

// The number of linear-decay steps of a wsd schedule, D above (0 for the other kinds).
int64_t wsd_decay_steps(const LrSchedule& s);

// The learning rate of 0-based `step` (formulas above). Throws nvfp4::Error for step < 0 or an
// invalid schedule (it calls validate(); cheap next to a training step).
double lr_at(const LrSchedule& s, int64_t step);

// One line for the start-of-run printout, e.g.
//   "cosine: peak 0.0003, warmup 100 steps, cosine decay to 3e-05 (0.1 x peak) at step 999 of 1000"
std::string describe(const LrSchedule& s);

}  // namespace nvfp4::train
