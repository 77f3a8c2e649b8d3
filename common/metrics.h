// Metrics: counters, histograms and gauges of this process, rendered in
// Prometheus's text exposition format (version 0.0.4) for the daemon's
// metrics endpoint (net/metrics_server.h).
//
// A counter or histogram is an object with static storage in the module
// that counts, registered in the process's registry when constructed:
//
//   metrics::Counter kFetchesServed("cshm_fetches_served_total",
//                                   "page fetches this node answered as the owner");
//   kFetchesServed.Add();
//
// Counting is one relaxed atomic add (a histogram's: three), so it may sit on
// any hot path. Gauges are functions called at each scrape; they are
// registered by whoever owns the state they read and must be removed before
// it goes (Registry::RemoveGauges with the owner's token, which waits for a
// scrape in progress). A gauge may take its owner's locks, so its owner must
// not call RemoveGauges while holding any of them.
//
// Why by hand: Debian 12 packages no C++ Prometheus client, and the text
// format is a few lines of "# HELP", "# TYPE" and "name{labels} value".
//
// Thread-safety: all methods are thread-safe.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace cshm::metrics {

class Counter {
 public:
  Counter(std::string name, std::string help);
  void Add(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }
  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }

 private:
  const std::string name_, help_;
  std::atomic<uint64_t> value_{0};
};

// Durations in seconds, in buckets from 50 µs to 20 s (each 2-2.5x the last):
// a local fault, a remote one, a release, a migration all fall inside.
class Histogram {
 public:
  static constexpr std::array<double, 14> kBounds = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                     0.01,    0.025,  0.05,    0.25,   1.0,   5.0,    20.0};
  Histogram(std::string name, std::string help);
  void Observe(std::chrono::nanoseconds d);
  // Observes the time since `start`.
  void Since(std::chrono::steady_clock::time_point start) { Observe(std::chrono::steady_clock::now() - start); }
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  // Per bucket, not cumulative; the last is past every bound (+Inf).
  std::array<uint64_t, kBounds.size() + 1> buckets() const;
  double sum_seconds() const { return static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9; }

 private:
  const std::string name_, help_;
  std::array<std::atomic<uint64_t>, kBounds.size() + 1> buckets_{};
  std::atomic<uint64_t> count_{0}, sum_ns_{0};
};

// One sample of a gauge: label pairs (may be empty) and the value.
struct Sample {
  std::vector<std::pair<std::string, std::string>> labels;
  double value = 0;
};

class Registry {
 public:
  // The process's registry (counters and histograms add themselves to it).
  static Registry& Default();

  void Add(Counter* c);
  void Add(Histogram* h);
  // A gauge (type "gauge") or a counter kept elsewhere (type "counter"),
  // read at each scrape. `token` names its owner for RemoveGauges.
  void AddGauge(const void* token, std::string name, std::string help, std::function<std::vector<Sample>()> read,
                const char* type = "gauge");
  void RemoveGauges(const void* token);
  // Everything, in the text exposition format, sorted by name.
  std::string Render();

 private:
  struct Gauge {
    const void* token;
    std::string name, help, type;
    std::function<std::vector<Sample>()> read;
  };
  std::mutex mu_;
  std::vector<Counter*> counters_;      // GUARDED_BY(mu_)
  std::vector<Histogram*> histograms_;  // GUARDED_BY(mu_)
  std::vector<Gauge> gauges_;           // GUARDED_BY(mu_)
};

// The value as Prometheus writes it (integers without a fraction, NaN/Inf spelled out).
std::string FormatValue(double v);
// A label value with \, " and newlines escaped.
std::string EscapeLabel(const std::string& v);

}  // namespace cshm::metrics
