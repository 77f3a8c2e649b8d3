#include "net/metrics_server.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <optional>
#include <thread>

#include "net/cluster_config.h"

namespace cshm::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {
constexpr int kMaxConnections = 16;
constexpr auto kRequestTimeout = std::chrono::seconds(5);
constexpr size_t kMaxHeader = 8 << 10;
}  // namespace

class MetricsServer::Impl {
 public:
  explicit Impl(std::function<std::string()> render) : render_(std::move(render)), acceptor_(io_) {}

  Status Listen(const std::string& host, uint16_t port) {
    boost::system::error_code ec;
    tcp::resolver resolver(io_);
    auto found = resolver.resolve(host, std::to_string(port), tcp::resolver::numeric_service, ec);
    if (ec || found.empty()) return Invalid("metrics address " + host + ": " + ec.message());
    const tcp::endpoint ep = found.begin()->endpoint();
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec == asio::error::address_in_use) return Busy("metrics port " + std::to_string(port) + " is taken");
    if (ec) return Status::FromErrno(ec.value(), "listening for metrics on " + host + ":" + std::to_string(port));
    port_ = acceptor_.local_endpoint().port();
    Accept();
    thread_ = std::thread([this] { io_.run(); });
    return Status::Ok();
  }

  ~Impl() {
    asio::post(io_, [this] {
      boost::system::error_code ec;
      acceptor_.close(ec);
    });
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

  uint16_t port() const { return port_; }

 private:
  struct Session : std::enable_shared_from_this<Session> {
    Session(Impl* s, tcp::socket sock) : server(s), stream(std::move(sock)) { server->open_++; }
    ~Session() { server->open_--; }
    void Read() {
      parser.emplace();
      parser->header_limit(kMaxHeader);
      parser->body_limit(0);
      stream.expires_after(kRequestTimeout);
      http::async_read(stream, buffer, *parser, [self = shared_from_this()](beast::error_code ec, size_t) {
        self->Got(ec);
      });
    }
    void Got(beast::error_code ec) {
      if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::operation_aborted ||
          ec == asio::error::connection_reset) {
        return Close();
      }
      auto res = std::make_shared<http::response<http::string_body>>();
      res->set(http::field::server, "cshmfs");
      if (ec) {  // not HTTP, or too large: say so and close
        res->result(http::status::bad_request);
        res->version(11);
        res->set(http::field::content_type, "text/plain");
        res->body() = "bad request: " + ec.message() + "\n";
        res->keep_alive(false);
      } else {
        const auto& req = parser->get();
        res->version(req.version());
        res->keep_alive(req.keep_alive());
        res->set(http::field::content_type, "text/plain; charset=utf-8");
        const std::string_view target(req.target().data(), req.target().size());
        const std::string_view path = target.substr(0, target.find('?'));
        if (req.method() != http::verb::get) {
          res->result(http::status::method_not_allowed);
          res->set(http::field::allow, "GET");
          res->body() = "only GET\n";
        } else if (path == "/metrics") {
          res->result(http::status::ok);
          res->set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
          res->body() = server->render_();
        } else if (path == "/") {
          res->result(http::status::ok);
          res->body() = "cshmfs: metrics at /metrics\n";
        } else {
          res->result(http::status::not_found);
          res->body() = "not found; metrics at /metrics\n";
        }
      }
      res->prepare_payload();
      stream.expires_after(kRequestTimeout);
      http::async_write(stream, *res, [self = shared_from_this(), res](beast::error_code wec, size_t) {
        if (wec || !res->keep_alive()) return self->Close();
        self->Read();
      });
    }
    void Close() {
      beast::error_code ec;
      stream.socket().shutdown(tcp::socket::shutdown_both, ec);
      stream.socket().close(ec);
    }
    Impl* server;
    beast::tcp_stream stream;
    beast::flat_buffer buffer{kMaxHeader};
    std::optional<http::request_parser<http::empty_body>> parser;
  };

  void Accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket sock) {
      if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
      if (!ec) {
        if (open_.load() >= kMaxConnections) {
          boost::system::error_code ignored;
          sock.close(ignored);
        } else {
          std::make_shared<Session>(this, std::move(sock))->Read();
        }
      }
      Accept();
    });
  }

  // Before io_: sessions still queued in it when it is destroyed count down open_.
  std::function<std::string()> render_;
  std::atomic<int> open_{0};
  uint16_t port_ = 0;
  asio::io_context io_;
  tcp::acceptor acceptor_;
  std::thread thread_;
};

Result<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& address,
                                                            std::function<std::string()> render) {
  CSHM_ASSIGN_OR_RETURN(auto hp, SplitHostPort(address));
  auto impl = std::make_unique<Impl>(std::move(render));
  CSHM_RETURN_IF_ERROR(impl->Listen(hp.first, hp.second));
  spdlog::info("metrics at http://{}/metrics (port {})", address, impl->port());
  return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(impl)));
}

MetricsServer::MetricsServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MetricsServer::~MetricsServer() = default;
uint16_t MetricsServer::port() const { return impl_->port(); }

}  // namespace cshm::net
