// Learning-rate schedules; the formulas and the contract are in schedule.hpp.
#include "train/schedule.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <numbers>

#include <nlohmann/json.hpp>

#include "nvfp4/error.hpp"

namespace nvfp4::train {

namespace {

using json = nlohmann::json;

constexpr LrSchedule::Kind kKinds[] = {LrSchedule::cosine, LrSchedule::wsd, LrSchedule::constant};

// A double for a message: shortest form that reads back the same ("0.0003", "1e-05", "nan").
std::string num(double v) {
  char buf[32];
  for (int prec = 1; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, v);
    if (std::strtod(buf, nullptr) == v) return buf;
  }
  return buf;  // NaN never compares equal: "%.17g" of it, i.e. "nan"
}

// A double for a one-line summary: 6 significant digits ("3e-05", not "3.0000000000000004e-05").
std::string short_num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

[[noreturn]] void bad(const std::string& what) { throw Error("learning-rate schedule: " + what); }

void check_fraction(const char* field, double v, const char* meaning) {
  if (!(v >= 0.0 && v <= 1.0)) {
    bad(std::string(field) + " is " + num(v) + ", it must be in [0, 1] (" + meaning + ")");
  }
}

}  // namespace

const char* schedule_kind_name(LrSchedule::Kind kind) {
  switch (kind) {
    case LrSchedule::cosine: return "cosine";
    case LrSchedule::wsd: return "wsd";
    case LrSchedule::constant: return "constant";
  }
  return "unknown";
}

std::string schedule_kind_names() {
  std::string s;
  for (const auto k : kKinds) {
    if (!s.empty()) s += ", ";
    s += schedule_kind_name(k);
  }
  return s;
}

int64_t wsd_decay_steps(const LrSchedule& s) {
  if (s.kind != LrSchedule::wsd) return 0;
  // NOTE: the product is exact enough for any realistic total_steps (< 2^53); llround rounds half
  // away from zero, so decay_fraction 0.2 of 1005 steps is 201 steps.
  return static_cast<int64_t>(std::llround(s.decay_fraction * static_cast<double>(s.total_steps)));
}

void validate(const LrSchedule& s) {
  if (s.kind != LrSchedule::cosine && s.kind != LrSchedule::wsd && s.kind != LrSchedule::constant) {
    bad("kind " + std::to_string(static_cast<int>(s.kind)) + " is not a schedule; valid schedules are " +
        schedule_kind_names());
  }
  if (!(s.peak_lr > 0.0) || !std::isfinite(s.peak_lr)) {
    bad("peak_lr is " + num(s.peak_lr) + ", it must be a finite number > 0 (e.g. 3e-4)");
  }
  if (s.total_steps < 1) {
    bad("total_steps is " + std::to_string(s.total_steps) + ", it must be >= 1");
  }
  if (s.warmup_steps < 0) {
    bad("warmup_steps is " + std::to_string(s.warmup_steps) + ", it must be >= 0");
  }
  if (s.warmup_steps > s.total_steps) {
    bad("warmup_steps " + std::to_string(s.warmup_steps) + " is more than total_steps " +
        std::to_string(s.total_steps) + "; shorten the warmup or train longer");
  }
  check_fraction("min_lr_fraction", s.min_lr_fraction, "the final lr is peak_lr times it");
  check_fraction("decay_fraction", s.decay_fraction, "wsd decays over this last fraction of total_steps");
  if (s.kind == LrSchedule::wsd) {
    const int64_t d = wsd_decay_steps(s);
    if (s.warmup_steps + d > s.total_steps) {
      bad("wsd: warmup_steps " + std::to_string(s.warmup_steps) + " plus " + std::to_string(d) +
          " decay steps (decay_fraction " + num(s.decay_fraction) + " of " + std::to_string(s.total_steps) +
          ") is more than total_steps; the warmup would run into the decay. Shorten one of them");
    }
  }
}

LrSchedule parse_schedule(std::string_view name, double peak_lr, int64_t warmup_steps, int64_t total_steps,
                          double min_lr_fraction, double decay_fraction) {
  LrSchedule s;
  bool found = false;
  for (const auto k : kKinds) {
    if (name == schedule_kind_name(k)) {
      s.kind = k;
      found = true;
    }
  }
  if (!found) {
    bad("unknown schedule '" + std::string(name) + "'; valid schedules are " + schedule_kind_names());
  }
  s.peak_lr = peak_lr;
  s.warmup_steps = warmup_steps;
  s.total_steps = total_steps;
  s.min_lr_fraction = min_lr_fraction;
  s.decay_fraction = decay_fraction;
  validate(s);
  return s;
}

double lr_at(const LrSchedule& s, int64_t step) {
  validate(s);
  if (step < 0) bad("step " + std::to_string(step) + " is negative; steps count from 0");
  const int64_t T = s.total_steps;
  const int64_t W = s.warmup_steps;
  if (step >= T) step = T - 1;  // past the end: stay on the last value
  const double peak = s.peak_lr;
  if (step < W) return peak * static_cast<double>(step + 1) / static_cast<double>(W);
  const double min = peak * s.min_lr_fraction;
  switch (s.kind) {
    case LrSchedule::constant:
      return peak;
    case LrSchedule::cosine: {
      const double p = static_cast<double>(step - W + 1) / static_cast<double>(T - W);  // (0, 1]
      return min + (peak - min) * 0.5 * (1.0 + std::cos(std::numbers::pi * p));
    }
    case LrSchedule::wsd: {
      const int64_t D = wsd_decay_steps(s);
      const int64_t S = T - D;  // first decay step
      if (step < S) return peak;
      const double p = static_cast<double>(step - S + 1) / static_cast<double>(D);  // (0, 1]
      return peak - (peak - min) * p;
    }
  }
  return peak;  // unreachable: validate() rejected other kinds
}

std::string describe(const LrSchedule& s) {
  std::string out = std::string(schedule_kind_name(s.kind)) + ": peak " + short_num(s.peak_lr);
  if (s.warmup_steps > 0) {
    out += ", linear warmup over " + std::to_string(s.warmup_steps) + " steps";
  } else {
    out += ", no warmup";
  }
  const std::string min = short_num(s.peak_lr * s.min_lr_fraction) + " (" + short_num(s.min_lr_fraction) + " x peak)";
  const std::string last = std::to_string(s.total_steps - 1);
  switch (s.kind) {
    case LrSchedule::constant:
      out += ", then constant";
      break;
    case LrSchedule::cosine:
      out += ", cosine decay to " + min + " at step " + last;
      break;
    case LrSchedule::wsd: {
      const int64_t d = wsd_decay_steps(s);
      if (d == 0) {
        out += ", then constant (decay_fraction 0)";
      } else {
        out += ", constant until step " + std::to_string(s.total_steps - d - 1) + ", linear decay over the last " +
               std::to_string(d) + " steps (" + short_num(s.decay_fraction) + " of the run) to " + min + " at step " + last;
      }
      break;
    }
  }
  out += "; " + std::to_string(s.total_steps) + " steps";
  return out;
}

// ---- JSON --------------------------------------------------------------------------------------

std::string LrSchedule::to_json_string() const {
  // NOTE: nlohmann writes doubles in the shortest form that parses back to the same bits.
  nlohmann::ordered_json j;
  j["kind"] = schedule_kind_name(kind);
  j["peak_lr"] = peak_lr;
  j["warmup_steps"] = warmup_steps;
  j["total_steps"] = total_steps;
  j["min_lr_fraction"] = min_lr_fraction;
  j["decay_fraction"] = decay_fraction;
  try {
    return j.dump();
  } catch (const json::exception& e) {  // a NaN field dumps as null, so this is not expected
    bad(std::string("cannot encode as JSON: ") + e.what());
  }
}

LrSchedule LrSchedule::from_json_string(std::string_view text) {
  json j;
  try {
    j = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    bad(std::string("the JSON text does not parse (") + e.what() + ")");
  }
  if (!j.is_object()) bad(std::string("expected a JSON object, got a JSON ") + j.type_name());
  static constexpr const char* kKeys[] = {"kind",          "peak_lr",         "warmup_steps",
                                          "total_steps",   "min_lr_fraction", "decay_fraction"};
  for (const auto& [key, value] : j.items()) {
    bool known = false;
    for (const char* k : kKeys) known = known || key == k;
    if (!known) {
      bad("unknown key \"" + key + "\" in the JSON form; the keys are kind, peak_lr, warmup_steps, total_steps, "
          "min_lr_fraction, decay_fraction (was it written by a newer nvfp4?)");
    }
  }
  auto field = [&](const char* key) -> const json& {
    const auto it = j.find(key);
    if (it == j.end()) bad(std::string("the JSON form has no \"") + key + "\"");
    return *it;
  };
  auto number = [&](const char* key) {
    const json& v = field(key);
    if (!v.is_number()) bad(std::string("\"") + key + "\" is a JSON " + v.type_name() + ", expected a number");
    return v.get<double>();
  };
  auto integer = [&](const char* key) {
    const json& v = field(key);
    if (!v.is_number_integer()) {
      bad(std::string("\"") + key + "\" is " + v.dump() + ", expected an integer");
    }
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      bad(std::string("\"") + key + "\" is " + v.dump() + ", too large");
    }
    return v.get<int64_t>();
  };
  const json& kind = field("kind");
  if (!kind.is_string()) bad("\"kind\" is a JSON " + std::string(kind.type_name()) + ", expected a string");
  return parse_schedule(kind.get_ref<const std::string&>(), number("peak_lr"), integer("warmup_steps"),
                        integer("total_steps"), number("min_lr_fraction"), number("decay_fraction"));
}

}  // namespace nvfp4::train
