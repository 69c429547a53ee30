// Prometheus text exposition (src/serve/metrics.hpp).
#include "serve/metrics.hpp"

#include <cmath>
#include <cstdio>

#include "nvfp4/error.hpp"

namespace nvfp4::serve {

namespace {

bool valid_name(const std::string& n) {
  if (n.empty()) return false;
  for (size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

// A sample value: integers as integers, the rest with round-trip precision.
std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[40];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.17g", v);
  }
  return buf;
}

// A label value escaped as the format requires: backslash, double quote and newline.
std::string escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '\\') o += "\\\\";
    else if (c == '"') o += "\\\"";
    else if (c == '\n') o += "\\n";
    else o += c;
  }
  return o;
}

// HELP text: backslash and newline escaped.
std::string escape_help(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '\\') o += "\\\\";
    else if (c == '\n') o += "\\n";
    else o += c;
  }
  return o;
}

}  // namespace

std::vector<double> latency_buckets() {
  return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
          2.5,   5.0,   7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 300.0};
}

void Metrics::add_series(const std::string& name, Series s) {
  if (!valid_name(name)) throw Error("metrics: '" + name + "' is not a Prometheus metric name");
  if (!s.label.empty() && !valid_name(s.label)) throw Error("metrics: '" + s.label + "' is not a label name");
  std::lock_guard<std::mutex> lock(mu_);
  if (series_.count(name)) throw Error("metrics: '" + name + "' is registered twice");
  order_.push_back(name);
  series_.emplace(name, std::move(s));
}

void Metrics::counter(const std::string& name, const std::string& help, const std::string& label) {
  Series s{Kind::counter, help, label, {}, {}, {}, 0, 0};
  if (label.empty()) s.values[""] = 0;
  add_series(name, std::move(s));
}

void Metrics::gauge(const std::string& name, const std::string& help, const std::string& label) {
  Series s{Kind::gauge, help, label, {}, {}, {}, 0, 0};
  if (label.empty()) s.values[""] = 0;
  add_series(name, std::move(s));
}

void Metrics::histogram(const std::string& name, const std::string& help, std::vector<double> buckets) {
  for (size_t i = 0; i < buckets.size(); ++i) {
    if (!std::isfinite(buckets[i]) || (i > 0 && !(buckets[i] > buckets[i - 1]))) {
      throw Error("metrics: histogram '" + name + "' needs strictly increasing finite bucket bounds");
    }
  }
  Series s{Kind::histogram, help, "", {}, std::move(buckets), {}, 0, 0};
  s.buckets.assign(s.bounds.size() + 1, 0);
  add_series(name, std::move(s));
}

Metrics::Series& Metrics::find(const std::string& name, Kind kind) {
  const auto it = series_.find(name);
  if (it == series_.end()) throw Error("metrics: '" + name + "' is not registered");
  if (it->second.kind != kind) throw Error("metrics: '" + name + "' is registered as another kind");
  return it->second;
}

const Metrics::Series& Metrics::find(const std::string& name) const {
  const auto it = series_.find(name);
  if (it == series_.end()) throw Error("metrics: '" + name + "' is not registered");
  return it->second;
}

void Metrics::add(const std::string& name, double v, const std::string& label_value) {
  std::lock_guard<std::mutex> lock(mu_);
  Series& s = find(name, Kind::counter);
  if (!(v >= 0)) throw Error("metrics: counter '" + name + "' can only grow");
  s.values[label_value] += v;
}

void Metrics::set(const std::string& name, double v, const std::string& label_value) {
  std::lock_guard<std::mutex> lock(mu_);
  find(name, Kind::gauge).values[label_value] = v;
}

void Metrics::observe(const std::string& name, double v) {
  std::lock_guard<std::mutex> lock(mu_);
  Series& s = find(name, Kind::histogram);
  size_t b = 0;
  while (b < s.bounds.size() && !(v <= s.bounds[b])) ++b;
  ++s.buckets[b];
  s.sum += v;
  ++s.count;
}

double Metrics::value(const std::string& name, const std::string& label_value) const {
  std::lock_guard<std::mutex> lock(mu_);
  const Series& s = find(name);
  if (s.kind == Kind::histogram) return static_cast<double>(s.count);
  const auto it = s.values.find(label_value);
  return it == s.values.end() ? 0.0 : it->second;
}

int64_t Metrics::count(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  return find(name).count;
}

std::string Metrics::render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string o;
  for (const auto& name : order_) {
    const Series& s = series_.at(name);
    const char* type = s.kind == Kind::counter ? "counter" : s.kind == Kind::gauge ? "gauge" : "histogram";
    o += "# HELP " + name + " " + escape_help(s.help) + "\n# TYPE " + name + " " + type + "\n";
    if (s.kind == Kind::histogram) {
      int64_t cum = 0;
      for (size_t b = 0; b <= s.bounds.size(); ++b) {
        cum += s.buckets[b];
        const std::string le = b < s.bounds.size() ? number(s.bounds[b]) : "+Inf";
        o += name + "_bucket{le=\"" + le + "\"} " + number(static_cast<double>(cum)) + "\n";
      }
      o += name + "_sum " + number(s.sum) + "\n" + name + "_count " + number(static_cast<double>(s.count)) + "\n";
      continue;
    }
    for (const auto& [lv, v] : s.values) {
      if (s.label.empty()) {
        o += name + " " + number(v) + "\n";
      } else {
        o += name + "{" + s.label + "=\"" + escape(lv) + "\"} " + number(v) + "\n";
      }
    }
  }
  return o;
}

}  // namespace nvfp4::serve
