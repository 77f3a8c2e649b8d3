// MetricsServer: the daemon's Prometheus endpoint. HTTP/1.1 over TCP on the
// address the config gives (off by default): GET /metrics answers the text
// exposition format (what `render` returns), GET / a line saying where the
// metrics are, anything else 404 or 405, and a request that is not HTTP
// gets 400 and the connection closed. Bounded: requests up to 8 KiB of
// header, 5 s to send one, 16 connections at once (more are closed at
// once); it never reads a body. Boost.Beast on an I/O thread of its own, so a
// slow scraper never delays the cluster's transport.
//
// Thread-safety: Start and the destructor from one thread; `render` is
// called on the server's thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"

namespace cshm::net {

class MetricsServer {
 public:
  // `address` is HOST:PORT (an IPv4 or IPv6 literal, [v6]:port, or a name
  // that resolves; port 0 picks a free one). kInvalid for a malformed one,
  // kBusy if the port is taken.
  static Result<std::unique_ptr<MetricsServer>> Start(const std::string& address,
                                                      std::function<std::string()> render);
  ~MetricsServer();
  uint16_t port() const;

  class Impl;

 private:
  explicit MetricsServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cshm::net
