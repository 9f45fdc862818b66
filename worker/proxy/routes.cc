// Matching a ClientHello's server name and ALPN protocols against a proxy's routes: in the
// order written, the first that matches both wins (HAProxy's use_backend rules read the same
// way), and a hello no route takes goes to the proxy's own upstream.
#include "worker/proxy/routes.h"

#include <algorithm>

namespace ferry::worker {

bool server_name_matches(std::string_view pattern, std::string_view name) noexcept {
  if (pattern.starts_with("*.")) {
    const std::string_view suffix = pattern.substr(1);  // ".example.com"
    return name.size() > suffix.size() && name.ends_with(suffix);
  }
  return pattern == name;
}

bool route_matches(const conf::Route& route, std::string_view server_name,
                   std::span<const std::string> alpn) noexcept {
  if (!route.server_names.empty()) {
    if (server_name.empty()) return false;
    const bool named = std::any_of(
        route.server_names.begin(), route.server_names.end(),
        [&](const std::string& pattern) { return server_name_matches(pattern, server_name); });
    if (!named) return false;
  }
  if (!route.alpn.empty()) {
    const bool offered = std::any_of(
        route.alpn.begin(), route.alpn.end(),
        [&](const std::string& p) { return std::find(alpn.begin(), alpn.end(), p) != alpn.end(); });
    if (!offered) return false;
  }
  return true;
}

RouteTable::RouteTable(const conf::Proxy& proxy, std::span<Balancer* const> balancers,
                       Balancer* fallback, std::span<ServerCounters* const> stats)
    : proxy_(&proxy) {
  const auto counters = [&](std::size_t i) { return i < stats.size() ? stats[i] : nullptr; };
  targets_.reserve(proxy.routes.size());
  for (std::size_t i = 0; i < proxy.routes.size(); ++i) {
    const conf::Route& r = proxy.routes[i];
    targets_.push_back(
        {r.name, r.upstream, i < balancers.size() ? balancers[i] : nullptr, counters(i)});
  }
  fallback_ = {kDefaultName, proxy.upstream, fallback, counters(proxy.routes.size())};
}

const RouteTarget* RouteTable::choose(const tls::ClientHello& hello) const noexcept {
  for (std::size_t i = 0; i < targets_.size(); ++i) {
    if (route_matches(proxy_->routes[i], hello.server_name, hello.alpn)) return &targets_[i];
  }
  return fallback();
}

}  // namespace ferry::worker
