#include "common/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

namespace cshm::metrics {

Counter::Counter(std::string name, std::string help) : name_(std::move(name)), help_(std::move(help)) {
  Registry::Default().Add(this);
}

Histogram::Histogram(std::string name, std::string help) : name_(std::move(name)), help_(std::move(help)) {
  Registry::Default().Add(this);
}

void Histogram::Observe(std::chrono::nanoseconds d) {
  const int64_t ns = std::max<int64_t>(0, d.count());
  const double s = static_cast<double>(ns) / 1e9;
  size_t i = 0;
  while (i < kBounds.size() && s > kBounds[i]) i++;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(static_cast<uint64_t>(ns), std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

std::array<uint64_t, Histogram::kBounds.size() + 1> Histogram::buckets() const {
  std::array<uint64_t, kBounds.size() + 1> out{};
  for (size_t i = 0; i < out.size(); i++) out[i] = buckets_[i].load(std::memory_order_relaxed);
  return out;
}

Registry& Registry::Default() {
  static Registry* r = new Registry();  // never destroyed: counters outlive exit's destructors
  return *r;
}

void Registry::Add(Counter* c) {
  std::lock_guard<std::mutex> lock(mu_);
  counters_.push_back(c);
}

void Registry::Add(Histogram* h) {
  std::lock_guard<std::mutex> lock(mu_);
  histograms_.push_back(h);
}

void Registry::AddGauge(const void* token, std::string name, std::string help,
                        std::function<std::vector<Sample>()> read, const char* type) {
  std::lock_guard<std::mutex> lock(mu_);
  gauges_.push_back(Gauge{token, std::move(name), std::move(help), type, std::move(read)});
}

void Registry::RemoveGauges(const void* token) {
  std::lock_guard<std::mutex> lock(mu_);
  gauges_.erase(std::remove_if(gauges_.begin(), gauges_.end(), [&](const Gauge& g) { return g.token == token; }),
                gauges_.end());
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    snprintf(buf, sizeof buf, "%.9g", v);
  }
  return buf;
}

std::string EscapeLabel(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

namespace {
std::string Labels(const std::vector<std::pair<std::string, std::string>>& labels) {
  if (labels.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < labels.size(); i++) {
    if (i > 0) out += ",";
    out += labels[i].first + "=\"" + EscapeLabel(labels[i].second) + "\"";
  }
  return out + "}";
}
// HELP text escapes only \ and newlines.
std::string Help(const std::string& h) {
  std::string out;
  for (char c : h) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}
}  // namespace

std::string Registry::Render() {
  // Families sorted by name; a family registered twice (a gauge of two
  // owners) is written once, with the samples of both.
  std::map<std::string, std::string> families;  // name -> text after its HELP/TYPE lines
  std::map<std::string, std::string> headers;
  auto header = [&](const std::string& name, const std::string& help, const std::string& type) {
    headers.emplace(name, "# HELP " + name + " " + Help(help) + "\n# TYPE " + name + " " + type + "\n");
  };
  // Under mu_ throughout: RemoveGauges waits for a scrape that reads its gauges.
  std::lock_guard<std::mutex> lock(mu_);
  {
    for (const Counter* c : counters_) {
      header(c->name(), c->help(), "counter");
      families[c->name()] += c->name() + " " + std::to_string(c->value()) + "\n";
    }
    for (const Histogram* h : histograms_) {
      header(h->name(), h->help(), "histogram");
      const auto b = h->buckets();
      std::string& out = families[h->name()];
      uint64_t cumulative = 0;
      for (size_t i = 0; i < b.size(); i++) {
        cumulative += b[i];
        const std::string le = i < Histogram::kBounds.size() ? FormatValue(Histogram::kBounds[i]) : "+Inf";
        out += h->name() + "_bucket{le=\"" + le + "\"} " + std::to_string(cumulative) + "\n";
      }
      out += h->name() + "_sum " + FormatValue(h->sum_seconds()) + "\n";
      out += h->name() + "_count " + std::to_string(cumulative) + "\n";
    }
  }
  for (const Gauge& g : gauges_) {
    header(g.name, g.help, g.type);
    std::string& out = families[g.name];
    for (const Sample& s : g.read()) out += g.name + Labels(s.labels) + " " + FormatValue(s.value) + "\n";
  }
  std::string text;
  for (const auto& [name, body] : families) text += headers[name] + body;
  return text;
}

}  // namespace cshm::metrics
