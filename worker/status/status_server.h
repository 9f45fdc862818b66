// StatusServer: the HTTP status endpoint (GET /status, GET /metrics) as one worker's event loop
// serves it — access rules, a bounded number of connections, a timeout on each request and on
// a stalled reader, keep-alive, and responses written as the client takes them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "conf/config.h"
#include "event/connection.h"
#include "event/event_loop.h"
#include "event/listening.h"
#include "event/log_throttle.h"
#include "worker/proxy/access_rules.h"

namespace ferry::worker {

struct StatusConnection;

class StatusServer {
 public:
  // The body of "/status" (JSON) or "/metrics" (Prometheus text), rendered on each request.
  using Renderer = std::function<std::string(std::string_view path)>;

  struct Options {
    // The whole request head must be in within this; on keep-alive connections it also bounds
    // the wait for the next request.
    event::Msec request_timeout{5'000};
    // A response is abandoned when the client takes none of it for this long.
    event::Msec send_timeout{5'000};
    // How long the client may take to close after the last response (its FIN is awaited so
    // that a close with unread bytes does not turn into a reset that eats the response).
    event::Msec linger_timeout{1'000};
    std::size_t max_connections = 64;  // per worker; more are closed at once
    int max_requests = 100;            // per keep-alive connection; the last says close
  };

  // What happened to connections, for tests and the worker's own numbers.
  struct Stats {
    std::uint64_t accepted = 0;   // taken by start()
    std::uint64_t denied = 0;     // refused by the access rules
    std::uint64_t refused = 0;    // over max_connections (or no room in the loop)
    std::uint64_t timed_out = 0;  // request or send timeout
    std::uint64_t responses = 0;  // every status code
    std::uint64_t bad_requests = 0;
  };

  // `settings` gives the access rules (copied); `render` is called on the loop thread for every GET
  // or HEAD of "/status" and "/metrics" (an empty one answers 503).
  StatusServer(const conf::StatusSettings& settings, Renderer render);
  StatusServer(const conf::StatusSettings& settings, Renderer render, const Options& options);
  ~StatusServer() { close_all(); }
  StatusServer(const StatusServer&) = delete;
  StatusServer& operator=(const StatusServer&) = delete;

  // Whether an accepted connection's listening socket is the status endpoint's.
  [[nodiscard]] static bool serves(const event::Listening& ls) noexcept { return ls.status; }

  // Takes over a connection accepted on the status socket (the acceptor's handler gives it);
  // closes it at once when it is denied or the worker has max_connections already.
  void start(event::EventLoop& loop, event::Connection& c);
  // Closes every connection now (worker shutdown).
  void close_all() noexcept;

  [[nodiscard]] std::size_t size() const noexcept { return count_; }
  [[nodiscard]] const Stats& stats() const noexcept { return stats_; }

 private:
  friend struct StatusConnection;
  void link(StatusConnection& s) noexcept;
  void unlink(StatusConnection& s) noexcept;

  conf::StatusSettings settings_;
  AccessRules rules_;
  Renderer render_;
  Options options_;
  Stats stats_;
  StatusConnection* head_ = nullptr;
  std::size_t count_ = 0;
  event::LogThrottle full_log_{event::Msec{5'000}};
};

}  // namespace ferry::worker
