// SessionSet: a worker's TCP proxy sessions, as the worker cycle drives them — start one per
// accepted client, the balancers (per upstream, following re-resolved addresses), shared
// resources set up at start, close them all at shutdown.
#pragma once

#include <cstddef>
#include <deque>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "conf/config.h"
#include "event/connection.h"
#include "event/event_loop.h"
#include "event/listening.h"
#include "worker/proxy/client_limits.h"
#include "worker/proxy/relay_direction.h"
#include "worker/proxy/session_record.h"
#include "worker/proxy/session_shared.h"
#include "worker/stats/stats_table.h"
#include "worker/upstream/balancer.h"
#include "worker/worker_counters.h"

namespace ferry::worker {

// What a session does (session.h): admit a client (access rules, per-client limit, a PROXY
// protocol header read with a timeout), pick a server through the upstream's balancer (failing
// over to the next one on a refused or timed-out connect, within next_upstream_tries and
// next_upstream_timeout), send a PROXY header on if asked, move bytes both ways with one buffer
// per direction, pass a FIN on as shutdown(SHUT_WR) and a reset as a reset, close when both
// directions are done, on an error, or after idle_timeout, and write one access-log line.
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
  // The IoBatch completion of the relay's batched sends and receives: give it to IoBatch::init of
  // the loop's batch.
  static void on_batch_done(void* cookie, int result) noexcept {
    RelayDirection::on_batch_done(cookie, result);
  }
  // Opens the access logs and builds the access rules of `cfg`'s proxies at worker start, so
  // that no session waits for a file to open or a thread to start.
  void prepare(const conf::Config& cfg);
  // Closes every session now (logged as `shutdown`).
  void close_all() noexcept;
  void reopen_logs() { shared_.reopen_logs(); }
  // The active health checks' verdicts, shared by the workers of this generation.
  void set_health_board(HealthBoard* board) noexcept { health_ = board; }
  // The configuration's TLS contexts (the master built them; null: no proxy or upstream has tls).
  void set_tls(const tls::TlsContexts* tls) noexcept { shared_.tls_ = tls; }
  // A server's host name now resolves to `addresses`: every balancer that has it follows
  // (one made later too).
  void update_addresses(const conf::Server& server, const std::vector<conf::Endpoint>& addresses);
  // The operator's settings of servers (ServerAdminTable::read()): applied to every balancer,
  // one made later too; a server added at run time joins its upstream's; a server whose
  // kill_epoch grew since the last call has its sessions doomed, unless `first` (a worker's
  // first look: the kills it sees were meant for the sessions of others). True when some are
  // doomed: kill_some() closes them.
  bool apply_admin(const conf::Config& cfg, std::vector<AdminRecord> records, bool first);
  // Closes at most `max` doomed sessions (`killed`), adding them to `killed`; true when some are
  // left for another call: closing thousands at once would stall the loop (each close of a TCP
  // socket is the kernel's FIN work, about 30 us on loopback).
  bool kill_some(std::size_t max, std::size_t& killed);
  // The servers added at run time by host name that the operator's settings still name, with
  // their upstream's name: the resolver follows them (a removed one's lookups stop).
  [[nodiscard]] std::vector<std::pair<std::string_view, const conf::Server*>> added_names() const;
  // The configured servers the operator's settings put in maintenance (their checks pause).
  [[nodiscard]] std::vector<const conf::Server*> in_maintenance(const conf::Config& cfg) const;
  [[nodiscard]] std::size_t size() const noexcept { return shared_.size(); }
  // This worker's entry in the shared counters (none: nothing counted outside the worker).
  void set_counters(WorkerCounters* counters) noexcept { shared_.set_counters(counters); }
  // The per-client session counts shared by all workers, the secret that keys them, and this
  // worker's share in them (what the master gives back if the worker dies). None:
  // max_conns_per_client is not enforced.
  void set_client_limits(ClientLimits* limits, const ClientLimits::Secret* secret,
                         std::size_t share) noexcept {
    shared_.set_client_limits(limits, secret, share);
  }

  // Publishes the connections this worker has in use now (the pool's, status ones included).
  void publish_connections(event::EventLoop& loop) noexcept { shared_.publish_connections(loop); }
  // A client of `proxy` the acceptor refused (worker_connections was full): counted accepted,
  // handled and no_connections.
  void count_refused(const conf::Proxy& proxy);

  // The shared statistics and this worker's slot in them (none: nothing is counted there).
  void set_stats(StatsTable* stats, std::size_t slot) noexcept { shared_.set_stats(stats, slot); }

  // --- Moving sessions (SessionMover drives these).
  // The live sessions (intrusive list, through Session::next).
  [[nodiscard]] Session* first() const noexcept { return shared_.first(); }
  // A session moved here on `client` and `upstream` (the record's sockets): started (not
  // running until resume()), in this loop. Null, with `refused` saying why, when this worker
  // cannot take it (the sockets are then closed here: the old worker still holds them).
  Session* adopt(event::EventLoop& loop, const conf::Config& cfg,
                 std::span<const event::Listening* const> listening, SessionRecord& r,
                 event::UniqueFd client, event::UniqueFd upstream, const char*& refused);

  // Called with `ctx` whenever the last session ends (shutdown waits on it).
  void set_on_empty(void (*on_empty)(void* ctx), void* ctx) noexcept {
    shared_.on_empty_ = on_empty;
    shared_.on_empty_ctx_ = ctx;
  }

 private:
  // The balancer of the upstream named `name` (made at its first use).
  Balancer& balancer(std::string_view name, const conf::Config& cfg);
  // session_admin.cc: the operator's settings of `u`'s servers on its balancer `b`.
  void apply_admin_to(Balancer& b, const conf::Upstream& u);
  // The configured or added server `r` names, or null.
  const conf::Server* server_of(const conf::Config& cfg, const AdminRecord& r) const;
  // A server added at run time, kept while any record names it (peers point at it).
  struct AddedServer {
    std::string upstream;
    conf::Server server;
  };

  SessionShared shared_;
  std::map<std::string, Balancer, std::less<>> balancers_;               // by upstream name
  std::map<const conf::Server*, std::vector<conf::Endpoint>> resolved_;  // since the load
  HealthBoard* health_ = nullptr;
  std::vector<AdminRecord> admin_;  // the operator's settings, as last read
  std::deque<AddedServer> added_;   // stable addresses; never freed (sessions point at them)
  std::uint32_t kills_seen_ = 0;    // the highest kill epoch of the operator's records seen
  // Servers whose sessions (those up to a serial: the ones there at the kill) are to be closed.
  struct Doomed {
    const conf::Server* server;
    std::uint64_t up_to_serial;
  };
  std::vector<Doomed> doomed_;
  std::size_t killed_now_ = 0;  // in this call of kill_some()
};

}  // namespace ferry::worker
