// Routes: a proxy's routes by the TLS ClientHello as a worker uses them (each with its
// upstream's balancer), and the choice of one for a hello.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"
#include "worker/tls/client_hello.h"

namespace ferry::worker {

class Balancer;
struct ServerCounters;

// Whether `pattern` (lowercase: a name, or "*.suffix" for any name ending in ".suffix") matches
// `name` (lowercase).
bool server_name_matches(std::string_view pattern, std::string_view name) noexcept;
// Whether `route` takes a hello with `server_name` (empty: none sent) and `alpn` offered.
bool route_matches(const conf::Route& route, std::string_view server_name,
                   std::span<const std::string> alpn) noexcept;

// Where a routed session goes.
struct RouteTarget {
  std::string_view name;      // the route's, or "default" for the proxy's own upstream
  std::string_view upstream;  // its upstream's name (as the statistics key servers)
  Balancer* balancer = nullptr;
  ServerCounters* stats = nullptr;  // this worker's counters of the route (null: not counted)
};

class RouteTable {
 public:
  static constexpr std::string_view kDefaultName = "default";

  // `proxy.routes` with each one's balancer (`balancers[i]`) and counters (`stats[i]`), and the
  // proxy's own upstream's balancer (`fallback`, null when it names none) for a hello no route
  // takes, with its counters `stats[proxy.routes.size()]`.
  RouteTable(const conf::Proxy& proxy, std::span<Balancer* const> balancers, Balancer* fallback,
             std::span<ServerCounters* const> stats);

  // The first route matching `hello`, else the default; null when neither.
  [[nodiscard]] const RouteTarget* choose(const tls::ClientHello& hello) const noexcept;
  // The default route (a client that sent no ClientHello), or null.
  [[nodiscard]] const RouteTarget* fallback() const noexcept {
    return fallback_.balancer != nullptr ? &fallback_ : nullptr;
  }
  [[nodiscard]] std::span<const RouteTarget> routes() const noexcept { return targets_; }

 private:
  const conf::Proxy* proxy_;
  std::vector<RouteTarget> targets_;  // in proxy_->routes' order
  RouteTarget fallback_;
};

}  // namespace ferry::worker
