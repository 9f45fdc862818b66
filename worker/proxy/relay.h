// A TCP proxy session set: admit a client (access rules, per-client limit, a PROXY protocol
// header read with a timeout), pick a server through the upstream's balancer (failing over to
// the next one on a refused or timed-out connect, within next_upstream_tries and
// next_upstream_timeout), send a PROXY header on if asked, move bytes both ways with one buffer
// per direction, pass a FIN on as shutdown(SHUT_WR) and a reset as a reset, close when both
// directions are done, on an error, or after idle_timeout, and write one access-log line.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <string>

#include "conf/config.h"
#include "event/connection.h"
#include "event/event_loop.h"
#include "event/listening.h"
#include "event/log_throttle.h"
#include "worker/proxy/access_log.h"
#include "worker/proxy/access_rules.h"
#include "worker/proxy/buffer_pool.h"
#include "worker/proxy/client_limits.h"
#include "worker/proxy/pipe_pool.h"
#include "worker/stats/stats_table.h"
#include "worker/upstream/balancer.h"
#include "worker/worker_counters.h"

namespace ferry::worker {

struct Session;

// The sessions of one worker, with the balancers and access logs they share.
class SessionSet {
 public:
  SessionSet() = default;
  ~SessionSet() { close_all(); }
  SessionSet(const SessionSet&) = delete;
  SessionSet& operator=(const SessionSet&) = delete;

  // Takes over an accepted client connection of `proxy`.
  void start(event::EventLoop& loop, event::Connection& client, const conf::Proxy& proxy,
             const conf::Config& cfg);
  // Puts `proxy`'s socket options (TCP_NODELAY, SO_KEEPALIVE) on its listening socket, which
  // accepted connections inherit: one setsockopt per worker instead of per connection.
  static void prepare_listening(const event::Listening& ls, const conf::Proxy& proxy);
  // The IoBatch completion of the relay's sends: give it to IoBatch::init of the loop's batch.
  static void on_batch_done(void* cookie, int result);
  // Opens the access logs and builds the access rules of `cfg`'s proxies at worker start, so
  // that no session waits for a file to open or a thread to start.
  void prepare(const conf::Config& cfg);
  // Closes every session now (logged as `shutdown`).
  void close_all() noexcept;
  void reopen_logs();
  // The active health checks' verdicts, shared by the workers of this generation.
  void set_health_board(HealthBoard* board) noexcept { health_ = board; }
  // A server's host name now resolves to `addresses`: every balancer that has it follows
  // (one made later too).
  void update_addresses(const conf::Server& server, const std::vector<conf::Address>& addresses);
  [[nodiscard]] std::size_t size() const noexcept { return count_; }
  // This worker's entry in the shared counters (none: nothing counted outside the worker).
  void set_counters(WorkerCounters* counters) noexcept { counters_ = counters; }
  // The per-client session counts shared by all workers, the secret that keys them, and this
  // worker's share in them (what the master gives back if the worker dies). None:
  // max_conns_per_client is not enforced.
  void set_client_limits(ClientLimits* limits, const ClientLimits::Secret* secret,
                         std::size_t share) noexcept {
    limits_ = secret != nullptr ? limits : nullptr;
    limits_secret_ = secret;
    limits_share_ = share;
  }

  // Publishes the connections this worker has in use now (the pool's, status ones included).
  void publish_connections(event::EventLoop& loop) noexcept;
  // A client of `proxy` the acceptor refused (worker_connections was full): counted accepted,
  // handled and no_connections.
  void count_refused(const conf::Proxy& proxy);

  // The shared statistics and this worker's slot in them (none: nothing is counted there).
  void set_stats(StatsTable* stats, std::size_t slot) noexcept {
    stats_ = stats;
    stats_slot_ = slot;
  }

  // Called with the set's context whenever the last session ends (shutdown waits on it).
  void (*on_empty)(void* ctx) = nullptr;
  void* on_empty_ctx = nullptr;

 private:
  friend struct Session;
  void link(Session& s) noexcept;
  void unlink(Session& s) noexcept;
  Balancer& balancer(const conf::Proxy& proxy, const conf::Config& cfg);
  AccessLog* access_log(const conf::Proxy& proxy);
  const AccessRules& rules(const conf::Proxy& proxy);
  // accept_proxy_protocol_from as rules: a sender no rule matches is not trusted.
  const AccessRules& senders(const conf::Proxy& proxy);
  // This worker's counters of `proxy` / of `peer` of `proxy` (null: not counted), looked up in
  // the shared registry once and kept.
  ProxyCounters* proxy_stats(const conf::Proxy& proxy);
  ServerCounters* server_stats(const conf::Proxy& proxy, const Peer& peer);

  Session* head_ = nullptr;
  std::size_t count_ = 0;
  WorkerCounters* counters_ = nullptr;
  ClientLimits* limits_ = nullptr;
  StatsTable* stats_ = nullptr;
  std::size_t stats_slot_ = StatsTable::kNoSlot;
  std::map<const conf::Proxy*, ProxyCounters*> proxy_stats_;
  std::map<const Peer*, ServerCounters*> server_stats_;
  const ClientLimits::Secret* limits_secret_ = nullptr;
  std::size_t limits_share_ = 0;
  std::map<std::string, Balancer, std::less<>> balancers_;              // by upstream name
  std::map<const conf::Server*, std::vector<conf::Address>> resolved_;  // since the load
  std::map<const conf::Proxy*, AccessRules> rules_;
  std::map<const conf::Proxy*, AccessRules> senders_;
  // Declared before the logs: destroyed after them, it writes out what they queued, then ends.
  std::shared_ptr<spdlog::details::thread_pool> log_writer_;
  std::map<std::string, std::unique_ptr<AccessLog>> logs_;
  event::LogThrottle pool_full_log_{event::Msec{5'000}};
  event::LogThrottle table_full_log_{event::Msec{5'000}};
  event::LogThrottle bad_header_log_{event::Msec{5'000}};
  event::LogThrottle untrusted_log_{event::Msec{5'000}};
  BufferPool buffers_;
  PipePool pipes_;
  HealthBoard* health_ = nullptr;
};

}  // namespace ferry::worker
