// Server telemetry in the Prometheus text exposition format (version 0.0.4), what `GET /metrics`
// returns: counters, gauges and histograms, each optionally split by one label (e.g. a linear
// layer's name). Written here, small on purpose: a registry of named series under one mutex
// (updates are a few per request and per engine step, far below any contention that matters).
//
// What it is not: a client library. No summaries (quantiles are computed by the scraper from the
// histogram buckets, or by `nvfp4 bench-serve` from its own samples), no exemplars, no timestamps.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace nvfp4::serve {

class Metrics {
 public:
  // Registers a series. `name` must match [a-zA-Z_:][a-zA-Z0-9_:]* (checked: an nvfp4::Error
  // otherwise); registering a name twice is an error. `label` (may be empty) names the one label
  // the series is split by.
  void counter(const std::string& name, const std::string& help, const std::string& label = "");
  void gauge(const std::string& name, const std::string& help, const std::string& label = "");
  // Buckets: strictly increasing finite upper bounds; +Inf is added.
  void histogram(const std::string& name, const std::string& help, std::vector<double> buckets);

  // Updates (the name must be registered with that kind: an nvfp4::Error otherwise).
  void add(const std::string& name, double v, const std::string& label_value = "");
  void set(const std::string& name, double v, const std::string& label_value = "");
  void observe(const std::string& name, double v);

  // The current value of a counter or gauge (0 when never set), a histogram's count.
  double value(const std::string& name, const std::string& label_value = "") const;
  int64_t count(const std::string& name) const;

  // Every series in registration order, label values sorted, in the text format.
  std::string render() const;

 private:
  enum class Kind { counter, gauge, histogram };
  struct Series {
    Kind kind;
    std::string help, label;
    std::map<std::string, double> values;  // label value -> value (counter, gauge)
    std::vector<double> bounds;            // histogram
    std::vector<int64_t> buckets;          // per bound, not cumulative; one more for +Inf
    double sum = 0;
    int64_t count = 0;
  };
  void add_series(const std::string& name, Series s);
  Series& find(const std::string& name, Kind kind);
  const Series& find(const std::string& name) const;

  mutable std::mutex mu_;
  std::vector<std::string> order_;
  std::map<std::string, Series> series_;
};

// Latency buckets in seconds (1 ms to 5 min), the ones vLLM's TTFT and end-to-end histograms span.
std::vector<double> latency_buckets();

}  // namespace nvfp4::serve
