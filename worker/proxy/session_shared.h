// SessionShared: what the sessions of one worker share — the live list, buffers and pipes,
// per-proxy rules, logs and counters, the per-client limits, throttled warnings — and all they
// reach of their SessionSet.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "conf/config.h"
#include "event/event_loop.h"
#include "event/log_throttle.h"
#include "event/socket_address.h"
#include "worker/proxy/access_log.h"
#include "worker/proxy/access_rules.h"
#include "worker/proxy/buffer_pool.h"
#include "worker/proxy/client_limits.h"
#include "worker/proxy/pipe_pool.h"
#include "worker/proxy/relay_direction.h"
#include "worker/proxy/routes.h"
#include "worker/stats/stats_table.h"
#include "worker/tls/tls_contexts.h"
#include "worker/upstream/balancer.h"
#include "worker/worker_counters.h"

namespace ferry::worker {

class Session;
class SessionSet;

class SessionShared {
 public:
  SessionShared() = default;
  SessionShared(const SessionShared&) = delete;
  SessionShared& operator=(const SessionShared&) = delete;

  // --- What a session uses.

  // A session joins the live list when it starts and leaves it when it closes; the last to
  // leave calls the set's on_empty (shutdown waits on it).
  // A session counts where it is: one moved here is linked (accepted) as if accepted here, one
  // moved away is unlinked with `moved_away` (no longer accepted here either).
  void link(Session& s, event::EventLoop& loop) noexcept;
  void unlink(Session& s, event::EventLoop& loop, bool moved_away = false) noexcept;

  // A new session's serial (Session::serial()): never 0, never reused in this worker.
  std::uint64_t next_serial() noexcept { return ++serial_; }
  // The newest session's serial (0: none yet).
  [[nodiscard]] std::uint64_t last_serial() const noexcept { return serial_; }

  BufferPool& buffers() noexcept { return buffers_; }
  PipePool& pipes() noexcept { return pipes_; }
  // What the relay directions borrow from (one worker, one loop).
  const RelayResources& relay(event::EventLoop& loop) noexcept {
    relay_.loop = &loop;
    return relay_;
  }

  // Looked up (built, opened) once per proxy and kept: prepare() does it at worker start so
  // that no session waits for a file to open or a thread to start.
  const AccessRules& rules(const conf::Proxy& proxy);
  // accept_proxy_protocol_from as rules: a sender no rule matches is not trusted.
  const AccessRules& senders(const conf::Proxy& proxy);
  AccessLog* access_log(const conf::Proxy& proxy);
  // This worker's counters of `proxy` / of `peer` of `proxy` (null: not counted), looked up in
  // the shared registry once and kept.
  ProxyCounters* proxy_stats(const conf::Proxy& proxy);
  // `upstream`: the name of the upstream `peer` is a server of (the route's, for a routed
  // session; StatsTable::upstream_name_of(proxy) otherwise).
  ServerCounters* server_stats(std::string_view upstream, const Peer& peer);
  // The proxy's TLS termination, the upstream's TLS origination (null: none).
  [[nodiscard]] const tls::ServerContext* server_tls(const conf::Proxy& proxy) const noexcept {
    return tls_ != nullptr ? tls_->server(proxy.name) : nullptr;
  }
  [[nodiscard]] const tls::ClientContext* client_tls(std::string_view upstream) const noexcept {
    return tls_ != nullptr ? tls_->client(upstream) : nullptr;
  }
  // A routing proxy's routes (SessionSet::prepare() builds them); null for a proxy without.
  [[nodiscard]] const RouteTable* routes(const conf::Proxy& proxy) const noexcept {
    const auto it = routes_.find(&proxy);
    return it != routes_.end() ? &it->second : nullptr;
  }

  // max_conns_per_client: a place for `client` in the shared per-client counts (ok: `*bucket`
  // holds it until release_client). Not enforced (no table, or no limit): ok, nothing held.
  enum class ClientPlace : std::uint8_t { held, not_counted, limit, table_full };
  ClientPlace acquire_client(const conf::Proxy& proxy, const event::SocketAddress& client,
                             std::uint32_t* bucket) noexcept;
  void release_client(std::uint32_t bucket) noexcept;
  // A counted session moved here / away (ClientLimits::adopt_share, leave_share).
  void adopt_client(std::uint32_t bucket) noexcept {  // (none: nothing to follow)
    if (limits_ != nullptr) limits_->adopt_share(bucket, limits_share_);
  }
  void leave_client(std::uint32_t bucket) noexcept {
    if (limits_ != nullptr) limits_->leave_share(bucket, limits_share_);
  }
  // This worker's counters of a server of `proxy` by name (null: not counted): a moved
  // session's server may be one this worker's balancer does not have.
  ServerCounters* server_stats(std::string_view upstream, std::string_view server);

  // Warnings a flood of clients would repeat: at most one message per 5 s each, with the
  // number held back.
  struct Throttles {
    event::LogThrottle pool_full{event::Msec{5'000}};
    event::LogThrottle table_full{event::Msec{5'000}};
    event::LogThrottle bad_header{event::Msec{5'000}};
    event::LogThrottle untrusted{event::Msec{5'000}};
    event::LogThrottle bad_hello{event::Msec{5'000}};
  };
  Throttles& throttles() noexcept { return throttles_; }

 private:
  // --- What only the set configures and drives (SessionSet is the one that may).
  friend class SessionSet;

  void set_counters(WorkerCounters* counters) noexcept { counters_ = counters; }
  void set_client_limits(ClientLimits* limits, const ClientLimits::Secret* secret,
                         std::size_t share) noexcept {
    limits_ = secret != nullptr ? limits : nullptr;
    limits_secret_ = secret;
    limits_share_ = share;
  }
  void set_stats(StatsTable* stats, std::size_t slot) noexcept {
    stats_ = stats;
    stats_slot_ = slot;
  }
  [[nodiscard]] std::size_t stats_slot() const noexcept { return stats_slot_; }
  void publish_connections(event::EventLoop& loop) noexcept;
  void reopen_logs();

  [[nodiscard]] Session* first() const noexcept { return head_; }
  [[nodiscard]] std::size_t size() const noexcept { return count_; }
  void (*on_empty_)(void* ctx) = nullptr;
  void* on_empty_ctx_ = nullptr;

  Session* head_ = nullptr;
  std::uint64_t serial_ = 0;
  std::size_t count_ = 0;
  WorkerCounters* counters_ = nullptr;
  ClientLimits* limits_ = nullptr;
  const ClientLimits::Secret* limits_secret_ = nullptr;
  std::size_t limits_share_ = 0;
  StatsTable* stats_ = nullptr;
  std::size_t stats_slot_ = StatsTable::kNoSlot;
  std::map<const conf::Proxy*, ProxyCounters*> proxy_stats_;
  std::map<const Peer*, ServerCounters*> server_stats_;
  std::map<const conf::Proxy*, AccessRules> rules_;
  std::map<const conf::Proxy*, AccessRules> senders_;
  std::map<const conf::Proxy*, RouteTable> routes_;
  const tls::TlsContexts* tls_ = nullptr;
  // Declared before the logs: destroyed after them, it writes out what they queued, then ends.
  std::shared_ptr<spdlog::details::thread_pool> log_writer_;
  std::map<std::string, std::unique_ptr<AccessLog>> logs_;
  Throttles throttles_;
  BufferPool buffers_;
  PipePool pipes_;
  RelayResources relay_{nullptr, &buffers_, &pipes_};
};

}  // namespace ferry::worker
