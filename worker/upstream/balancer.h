// Upstream balancing for one worker: the servers of an upstream group with their live state,
// and the choice of a server for a session — nginx's smooth weighted round robin, weighted
// least connections, or consistent hashing of the client address — with passive health
// (max_fails within fail_timeout), max_conns, backup servers, the servers already tried, and
// slow start for a server that comes back.
// One balancer per upstream in a worker: every proxy of the upstream shares its state.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "conf/config.h"
#include "conf/openssl_ptr.h"
#include "event/clock.h"
#include "event/socket_address.h"
#include "worker/upstream/health_board.h"
#include "worker/upstream/server_admin.h"

namespace ferry::worker {

// One address of a server: a server whose name resolves to several addresses has a peer for
// each (as in nginx), all with its settings; a service's have their records' ports, weights
// and priority classes.
struct Peer {
  const conf::Server* server = nullptr;
  event::SocketAddress address;
  std::string name;       // as configured (address or service), for logs and statistics (shared)
  std::string host;       // the SRV target this address came from ("" otherwise): TLS's name
  std::size_t index = 0;  // in the group
  bool gone = false;      // the name no longer resolves to this address
  int weight = 1;
  int configured_weight = 1;  // the configuration's (or its SRV record's), under an operator's
  std::int64_t current_weight = 0;  // smooth weighted round robin state, in 1/slow_start::kScale
  int effective_weight = 1;         // lowered by failures, recovers by one per pick
  int conns = 0;                    // sessions of this worker on the server
  int fails = 0;
  event::TimePoint checked{};   // when the fail window started / a trial was granted
  event::TimePoint accessed{};  // the last failure
  bool backup = false;
  // The operator's say (ServerAdminTable): anything but ready takes no new session.
  AdminState admin = AdminState::ready;
  // The active checks' verdicts on the server's addresses, when there are checks; this
  // address's key in them, and where it was last found.
  const ServerHealth* health = nullptr;
  std::uint64_t health_key = 0;
  std::size_t health_hint = ServerHealth::kAddresses;
  std::uint64_t passes_seen = 0;  // the checks of it that passed when its failures were counted
  bool passes_known = false;      // passes_seen was read from a word (none: nothing to compare)
  bool health_missed = false;     // the last look found no word for it, at health_missed_at
  event::TimePoint health_missed_at{};
  SharedConns shared;         // its sessions across the workers, for max_conns (none: `conns` only)
  event::Msec slow_start{0};  // its ramp's length (0: none)
  event::TimePoint ramp_until{};  // ramping up while before this (never, at first)
  bool checks_down = false;       // the last look at its verdict found it down
  // The TLS session the server last gave this worker (an upstream with tls and session_reuse),
  // offered on the next connection to it; freed with the peer (a balancer rebuilt on reload), or
  // when its place goes to another address, its name to another target, or the server is removed.
  conf::SslSessionPtr tls_session;
};

// Which servers a session has already tried (by index into the group's peers).
class TriedSet {
 public:
  // Sized to a group's peers; grows, keeping what was tried, when a re-resolution adds some
  // between two tries of a session.
  void ensure(std::size_t n) {
    if (bits_.size() < n) bits_.resize(n, false);
  }
  [[nodiscard]] bool has(std::size_t i) const { return i < bits_.size() && bits_[i]; }
  void add(std::size_t i) {
    if (i < bits_.size()) bits_[i] = true;
  }
  [[nodiscard]] std::size_t count() const {
    std::size_t n = 0;
    for (bool b : bits_) n += b;
    return n;
  }

 private:
  std::vector<bool> bits_;
};

class Balancer {
 public:
  Balancer() = default;
  // `health`: the slots of this upstream's servers on the HealthBoard (in configuration order),
  // or null when the upstream has no active health check. `shared`: the servers' session counts
  // across the workers (in configuration order), or null: max_conns then holds per worker.
  explicit Balancer(const conf::Upstream& upstream, ServerHealth* health = nullptr,
                    const SharedConns* shared = nullptr);

  // The server for a session, or nullptr when none can take it. `key` is the client address
  // (hash balancing). The pick counts as a connection until release().
  Peer* pick(const event::SocketAddress& key, TriedSet& tried, event::TimePoint now);
  // The session is done with `peer`: `failed` when connecting to it failed.
  void release(Peer& peer, bool failed, event::TimePoint now);
  // The session gives `peer` up for a reason of its own (no descriptor for the socket): no
  // verdict on the server either way.
  void abandon(Peer& peer) noexcept { drop_conn(peer); }
  // A session moved here from another worker is connected to `server` at `address`: its peer
  // here, counted as a connection (max_conns or not: the session exists), or null when this
  // group has no such peer (the reload removed the server, or it resolves elsewhere now).
  Peer* adopt(std::string_view server, const event::SocketAddress& address) noexcept;

  // The operator's settings of `server` (an admin state, and a weight: 0 for the configured one),
  // for each of its peers. Sessions already on it are not touched.
  // `ready_since`: when the operator last made it ready (or added it): a slow start runs from
  // then (the same in every worker, and across a reload), if it is not over yet.
  void set_admin(const conf::Server& server, AdminState state, int weight,
                 event::TimePoint ready_since = event::TimePoint{});
  // A server added at run time (kept alive by the caller as long as the balancer), with its
  // address: a peer like a configured one's, without active checks or a shared max_conns.
  void add_server(const conf::Server& server);
  [[nodiscard]] bool has_server(const conf::Server& server) const noexcept {
    return servers_.contains(&server);
  }

  // `server`'s name (or service) now resolves to `addresses`: a peer for each new one, the others
  // gone; a peer whose weight or backup flag changed (a service's records) takes the new ones.
  // Peers are not freed (sessions hold pointers to them and the tried sets their indices): one
  // whose address comes back is live again, with its passive failures, and a new address takes
  // the place of a gone peer of the server that no session holds, so a name that keeps moving
  // does not grow the group. A session that tried the gone peer of a place does not try the new
  // address in it: the tried sets know places, not addresses.
  void set_addresses(const conf::Server& server, const std::vector<conf::Endpoint>& addresses);
  // The same, each address with the server's own weight and backup flag (a host name's).
  void set_addresses(const conf::Server& server, const std::vector<conf::Address>& addresses);

  [[nodiscard]] std::size_t size() const noexcept { return peers_.size(); }
  [[nodiscard]] std::deque<Peer>& peers() noexcept { return peers_; }
  [[nodiscard]] std::size_t index_of(const Peer& p) const noexcept { return p.index; }
  // Whether `peer` is unavailable by passive health (max_fails within fail_timeout) at `now`,
  // and until when. An active check that passed since the failures clears them.
  [[nodiscard]] bool passively_failed(Peer& peer, event::TimePoint now);
  [[nodiscard]] static event::TimePoint failed_until(const Peer& peer) noexcept;
  // Whether the active checks found `peer`'s address down (an address they have no verdict on
  // yet is up).
  [[nodiscard]] bool down_by_checks(Peer& peer, event::TimePoint now) const noexcept;
  // `peer`'s verdict word on the board, 0 when none.
  [[nodiscard]] std::uint64_t verdict_of(Peer& peer, event::TimePoint now) const noexcept;
  // Takes the passes the checks counted of `peer`'s address now as the baseline for its failures
  // (a look at the board at `now`, remembered as verdict_of()'s are).
  static void note_passes(Peer& peer, event::TimePoint now) noexcept;

  // `peer` becomes available at `now` (an operator set it back to ready, or added it): its weight
  // ramps up over its slow_start period, if it has one and the balance is by weight. Called by
  // the balancer itself when the checks find it up again or its passive failures end.
  void begin_slow_start(Peer& peer, event::TimePoint now) noexcept;
  // How far `peer`'s ramp is at `now`, in [0, 1]; 1 when it is not ramping.
  [[nodiscard]] static double slow_start_progress(const Peer& peer, event::TimePoint now) noexcept;
  // The weight `peer` has at `now`, in 1/slow_start::kScale: its full weight unless ramping.
  [[nodiscard]] static std::int64_t weight_now(const Peer& peer, event::TimePoint now) noexcept;

 private:
  // Which servers a pass of pick() may choose: `fresh` leaves out the passively failed ones;
  // `any_failed` takes them too, when no server is available otherwise.
  enum class Pass : std::uint8_t { fresh, any_failed };
  [[nodiscard]] bool available(Peer& p, Pass pass, event::TimePoint now);
  // Whether every server the active checks allow has failed passively (the any_failed pass).
  [[nodiscard]] bool every_server_failed(event::TimePoint now);
  Peer* choose(const event::SocketAddress& key, TriedSet& tried, event::TimePoint now);
  // Counts a session on `p`, in the shared count too, unless that is at max_conns already
  // (another worker took the last place since available() looked).
  [[nodiscard]] static bool take_conn(Peer& p) noexcept;
  static void drop_conn(Peer& p) noexcept;
  // What `p` adds to its current weight in a pick at `now` (and its effective weight's recovery).
  static std::int64_t step_of(Peer& p, event::TimePoint now) noexcept;
  Peer* round_robin(bool backup, Pass pass, TriedSet& tried, event::TimePoint now);
  Peer* least_conn(bool backup, Pass pass, TriedSet& tried, event::TimePoint now);
  Peer* hash(const event::SocketAddress& key, Pass pass, TriedSet& tried, event::TimePoint now);
  void build_ring();
  // A failed server back (failures cleared): it ramps up if it was out for them.
  void end_failures(Peer& p, event::TimePoint now) noexcept;
  // `word`'s passes as `p`'s baseline (none known when `word` is 0).
  static void take_baseline(Peer& p, std::uint64_t word) noexcept;
  // What a server's peers share: its active-check slot and its count across the workers.
  struct ServerSlots {
    ServerHealth* health = nullptr;
    SharedConns shared;
    AdminState admin = AdminState::ready;  // the operator's, for peers a re-resolution adds
    int weight = 0;                        // likewise (0: the configured weight)
    event::Msec slow_start{0};             // the server's own, else its upstream's
  };
  void add_peer(const conf::Server& s, const conf::Endpoint& e, const ServerSlots& slots);
  // (Re)sets `p` as a fresh peer of `s` at `e`: no failures, no rotation state.
  static void fill_peer(Peer& p, const conf::Server& s, const conf::Endpoint& e,
                        const ServerSlots& slots);

  conf::Balance method_ = conf::Balance::round_robin;
  event::Msec check_interval_{0};  // the active checks' (0: none)
  std::deque<Peer> peers_;         // stable addresses: sessions hold pointers to their peer
  std::vector<bool> candidates_;   // least_conn's choice of peers, sized with peers_: no allocation
  std::map<const conf::Server*, ServerSlots> servers_;  // the group's servers (not down)
  struct Point {
    std::uint64_t hash;
    std::uint32_t peer;
  };
  std::vector<Point> ring_;  // consistent-hash points, sorted
};

}  // namespace ferry::worker
