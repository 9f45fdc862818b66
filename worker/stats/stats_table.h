// StatsTable: the counters of every proxy, upstream server and worker, in segments shared by the
// master and every worker of every generation; Snapshot: a plain copy of their totals.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"
#include "event/syscall_util.h"
#include "worker/upstream/server_admin.h"
#include "worker/worker_counters.h"

namespace ferry::worker {

// One proxy's counts in one worker. Every connection accept() returned counts in `accepted`,
// refused ones too, and in `handled` once it is closed, whichever way: accepted = handled +
// active at any quiet moment.
struct ProxyCounters {
  std::atomic<std::uint64_t> accepted{0};
  std::atomic<std::uint64_t> handled{0};
  std::atomic<std::uint64_t> active{0};          // sessions open now (a gauge)
  std::atomic<std::uint64_t> denied{0};          // refused by the proxy's access rules
  std::atomic<std::uint64_t> limited{0};         // by max_conns_per_client
  std::atomic<std::uint64_t> no_connections{0};  // worker_connections was full
  std::atomic<std::uint64_t> bytes_from_clients{0};
  std::atomic<std::uint64_t> bytes_to_clients{0};
};

// One upstream server's counts in one worker: `sessions` connected to it, `connect_failures`
// (refused, timed out, unreachable), bytes sent to it and received from it.
struct ServerCounters {
  std::atomic<std::uint64_t> sessions{0};
  std::atomic<std::uint64_t> active{0};  // sessions connected to it now (a gauge)
  std::atomic<std::uint64_t> connect_failures{0};
  std::atomic<std::uint64_t> bytes_sent{0};
  std::atomic<std::uint64_t> bytes_received{0};
  // Failed by this worker's passive checks (max_fails within fail_timeout): since << 32 | until,
  // Unix seconds, one store; 0 when not. Not a count: the snapshot takes the latest of the live
  // workers', and a reaped worker's is dropped.
  std::atomic<std::uint64_t> failed{0};
};

// The `failed` word of ServerCounters.
constexpr std::uint64_t passive_failure_word(std::int64_t since, std::int64_t until) noexcept {
  return static_cast<std::uint64_t>(since) << 32 | static_cast<std::uint32_t>(until);
}

// For the worker that owns the counter (its loop thread): each counter has that one writer, so a
// load and a store do, without the locked read-modify-write of fetch_add; readers in other
// processes still see whole values.
inline void stat_add(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}
inline void stat_sub(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
  c.store(c.load(std::memory_order_relaxed) - n, std::memory_order_relaxed);
}

// What a server is, as the status shows it: `down` by configuration or by the active health
// check, `failed` by a worker's passive checks (max_fails within fail_timeout, not cleared by an
// active check that passed since), `backup`, `draining` (no longer configured, sessions still
// open), `removed` (no longer configured, nothing open: kept for its totals), else `up`.
enum class ServerState : std::uint8_t { up, down, backup, draining, removed, failed };
enum class CheckResult : std::uint8_t { none, ok, failed };
enum class ReloadResult : std::uint8_t { none, ok, failed };
std::string_view to_string(ServerState s) noexcept;
std::string_view to_string(CheckResult r) noexcept;
std::string_view to_string(ReloadResult r) noexcept;

// Everything the renderings show, summed and copied out of the segment. Times are Unix seconds.
struct Snapshot {
  struct Proxy {
    std::string name;
    bool configured = true;  // in the latest configuration the master loaded
    std::uint64_t accepted = 0, handled = 0, active = 0, denied = 0, limited = 0;
    std::uint64_t no_connections = 0;
    std::uint64_t bytes_from_clients = 0, bytes_to_clients = 0;
    bool operator==(const Proxy&) const = default;
  };
  struct Server {
    std::string address;  // as the configuration writes it
    ServerState state = ServerState::up;
    std::uint64_t sessions = 0, active = 0, connect_failures = 0;
    std::uint64_t bytes_sent = 0, bytes_received = 0;
    CheckResult health = CheckResult::none;  // the last active check's result
    std::int64_t health_at = 0;              // when it ran (0 with none)
    // The operator's settings (annotate_servers(); not in the segment).
    AdminState admin = AdminState::ready;
    int weight = 0;               // configured, or set at run time
    int effective_weight = 0;     // what new sessions see now: 0 out of service, less in slow start
    int slow_start_percent = -1;  // how far its slow start is (-1: none under way)
    bool added = false;           // added at run time
    bool operator==(const Server&) const = default;
  };
  struct Upstream {
    std::string name;
    std::vector<Server> servers;
    bool operator==(const Upstream&) const = default;
  };
  struct Worker {
    pid_t pid = 0;
    int generation = 0;
    std::int64_t started = 0;
    std::uint64_t connections = 0;  // in use now, client and server sides
    bool operator==(const Worker&) const = default;
  };

  std::string version;
  pid_t pid = 0;  // the master's
  std::int64_t started = 0;
  std::int64_t now = 0;  // when the snapshot was taken
  int generation = 0;
  std::uint64_t reloads_ok = 0;
  std::uint64_t reloads_failed = 0;
  ReloadResult last_reload = ReloadResult::none;
  std::int64_t last_reload_at = 0;
  std::string last_reload_error;  // of the last failed reload, kept after later good ones
  std::vector<Worker> workers;    // alive now, by slot
  std::vector<Proxy> proxies;     // every name ever configured, in the order first seen
  std::vector<Upstream> upstreams;
  // A routing proxy's routes (issue 22), one group per proxy named as the proxy, a "server" per
  // route named as the route: `sessions` routed there, `active` open now. In the segments they
  // are servers of the upstream StatsTable::routes_key(proxy) (fold and inherit alike);
  // snapshot() moves them here.
  std::vector<Upstream> routes;

  // Equal snapshots render alike (the clock is in whole seconds): see RenderCache.
  bool operator==(const Snapshot&) const = default;
};

// Two segments the master maps at start, before any fork; master and workers then all hold them
// at the same addresses, and they outlive every generation. Most of them is never touched: the
// names fill pages as they are registered, and a worker's block only the pages of the proxies and
// servers registered (the whole is ~30 MiB of address space).
//
// - The registry, written by the master only and read-only in every worker (a sealed memfd that
//   no process can map writable again, see create()): proxies by name, servers by (upstream
//   name, address text), each with an index stable while any live worker may use it (a
//   proxy a reload drops keeps its totals until its index is reclaimed for a new name, see
//   register_proxy()); the workers' pids, generations and start
//   times; the retired block, into which a reaped worker's counts are folded; the master block:
//   version, pid, start time, generation, the reloads. A proxy with `upstream = "host:port"` has
//   an upstream named "host:port" with that one server: the loader takes the text as an
//   upstream's name first, so it never collides with a configured upstream.
// - The counters, which every worker may write: a block per worker slot (CountersTable's entry
//   index, which the master hands out and takes back), written by that worker only, each
//   page-aligned so workers never share a cache line; each worker's connections gauge; each
//   server's last health check.
//
// A binary upgrade passes both segments to the new master (pass_to_exec(), open_passed()). The
// old registry is sealed, so the new master makes its own and takes the old master's totals in
// by name (inherit()): into an `inherited` block of its registry, a counter never lower than the
// last time, until the old master has exited (its workers all folded), then once more for good.
//
// The master never trusts the counters: it keeps its own copies of the registry's counts, bounds
// every loop by them, and takes a block whose counts cannot be (a counter past 2^62, a session
// count that does not add up) as garbage: left out of a snapshot, dropped (and logged) by a fold.
class StatsTable {
 public:
  static constexpr std::size_t kMaxProxies = 256;
  static constexpr std::size_t kMaxServers = 1024;
  static constexpr std::size_t kSlots = CountersTable::kEntries;
  static constexpr std::size_t kNoSlot = std::numeric_limits<std::size_t>::max();
  // Longer names are refused, not cut: two names cut alike would share counters.
  static constexpr std::size_t kMaxName = 128;     // proxy and upstream names, bytes
  static constexpr std::size_t kMaxAddress = 264;  // "host:port" with a 253-byte host fits
  static constexpr std::size_t kMaxError = 512;    // a reload error longer is cut
  static constexpr std::size_t kMaxVersion = 64;
  // No counter gets there honestly (4.6 EB, or a connection a nanosecond for 146 years).
  static constexpr std::uint64_t kCeiling = std::uint64_t{1} << 62;
  // Where a snapshot shows the totals of names reclaimed for new ones: a proxy by this name, and
  // a server by this address in an upstream by this name (listed only once there are any).
  static constexpr std::string_view kReclaimed = "(reclaimed)";

  // Maps both segments (zeroed: an empty table) and writes the master block. nullptr when a
  // system call fails (logged). A kernel older than 5.1 refuses F_SEAL_FUTURE_WRITE: the workers'
  // read-only view is then mapped from a read-only open of the memfd instead (warned).
  static std::unique_ptr<StatsTable> create(std::string_view version, pid_t master_pid,
                                            std::int64_t started);
  // Test only: the next create() is refused F_SEAL_FUTURE_WRITE, as by a kernel before 5.1.
  static void refuse_future_write_seal_once() noexcept;
  ~StatsTable();
  StatsTable(const StatsTable&) = delete;
  StatsTable& operator=(const StatsTable&) = delete;

  // The registry's upstream name under which a routing proxy's routes count: "(routes) NAME"
  // (a configured name never begins with '(').
  static constexpr std::string_view kRoutesPrefix = "(routes) ";
  static std::string routes_key(std::string_view proxy) {
    return std::string(kRoutesPrefix) + std::string(proxy);
  }

  // The upstream name under which `proxy`'s servers count (see above).
  static std::string_view upstream_name_of(const conf::Proxy& proxy) noexcept {
    return proxy.upstream.empty() && proxy.upstream_address ? proxy.upstream_address->text
                                                            : proxy.upstream;
  }

  // ---- the master ----------------------------------------------------------------------------

  // Registers every proxy and server of `cfg` and makes it the latest configuration (for
  // `configured`, a server's backup/down flags and whether it is health-checked). Before that
  // configuration's workers are forked. Returns how many names did not fit (not counted).
  std::size_t register_config(const conf::Config& cfg) noexcept;
  // The name's index, registering it if new; nullopt when the name is too long or the registry
  // full. (register_config's parts; alone they leave the configuration flags as they are.)
  // A full registry reclaims the index of a name that no live worker's configuration has, nor
  // the latest published one, nor an old master's being inherited (the least recently
  // configured first): its totals go to the `kReclaimed` entries, so that grand totals never go
  // back, and every block's counters at that index are zeroed before the new name is written
  // (under fold_seq: a reader sees the old name and totals or the new, never half of either).
  std::optional<std::size_t> register_proxy(std::string_view name) noexcept;
  std::optional<std::size_t> register_server(std::string_view upstream,
                                             std::string_view address) noexcept;
  // Test only (FERRY_TEST_STATS_CAPACITY): fewer names than kMaxProxies and kMaxServers fit.
  void set_capacity_for_tests(std::size_t proxies, std::size_t servers) noexcept {
    max_proxies_ = std::min(proxies, kMaxProxies);
    max_servers_ = std::min(servers, kMaxServers);
  }
  // The newest generation of workers (starting or serving): its health checks are the ones
  // that count.
  void set_generation(int generation) noexcept;
  void reload_succeeded(std::int64_t at) noexcept;
  void reload_failed(std::string_view error, std::int64_t at) noexcept;
  // The worker for `slot` is about to start: its block is zeroed (garbage another worker wrote
  // into the free slot is not blamed on it), and it counts from now on. Before the fork, so that
  // nothing it counted is zeroed: with pid 0, then worker_forked() (the slot is shown once it
  // has a pid).
  void worker_started(std::size_t slot, pid_t pid, int generation, std::int64_t started) noexcept;
  void worker_forked(std::size_t slot, pid_t pid) noexcept;
  // The worker in `slot` has been reaped: its counts move to the retired totals (its sessions
  // died with it: `active` is dropped) and the slot is clean for the next worker. Before the
  // slot is handed out again. Returns how many of its counters could not be true (or would take
  // a retired total past the ceiling): when any, none of its counts were kept (the caller says
  // so). Allocates nothing.
  std::size_t fold(std::size_t slot) noexcept;

  // ---- a binary upgrade ----------------------------------------------------------------------

  // The old master, in the forked child about to exec the new binary: clears FD_CLOEXEC on
  // both segments' fds and returns them as "REGISTRY;COUNTERS" ("" when it has none).
  [[nodiscard]] std::string pass_to_exec() const noexcept;
  // Test only (FERRY_TEST_PASS_GARBAGE_STATS): fresh segments of the right sizes full of
  // garbage, passed instead of the real ones. "" when they cannot be made.
  static std::string garbage_for_exec() noexcept;
  // The new master: a read-only view of the segments an old master passed (the fds, which the
  // caller knows to be the old master's memfds, are closed once mapped); nullptr (logged) when
  // they are not segments of this layout. Everything in them is taken as untrusted.
  static std::unique_ptr<StatsTable> open_passed(event::UniqueFd registry,
                                                 event::UniqueFd counters);
  // The new master: takes `old`'s totals in. Each proxy and server is registered by name (shown
  // `removed` unless configured here) and its inherited counters raised to the old ones (never
  // lowered); the first time, the old reload counts are added to ours. `final`: the old master
  // has exited, nothing writes `old` any more; its gauges are dropped (its sessions are over).
  // Returns how many old entries were not taken (garbage, or no room), or nullopt when `old` did
  // not hold still long enough to be read (try again later).
  std::optional<std::size_t> inherit(const StatsTable& old, bool final);

  // ---- a worker ------------------------------------------------------------------------------

  // In a forked worker, before it runs anything else: gives up the master's writable view of
  // the registry, leaving the read-only one (which the seal keeps read-only: mprotect and
  // /proc/self/mem are refused). Master-only calls are then ignored. False when munmap fails.
  bool enter_worker() noexcept;
  // This worker's counters of a registered proxy or server, nullptr when it is unknown (or the
  // worker has no slot: kNoSlot). Resolved once at start; then only stat_add/stat_sub on them.
  ProxyCounters* proxy_counters(std::size_t slot, std::string_view proxy_name) noexcept;
  ServerCounters* server_counters(std::size_t slot, std::string_view upstream,
                                  std::string_view server_address) noexcept;
  // The connections this worker has in use now.
  void set_connections(std::size_t slot, std::uint64_t connections) noexcept;
  [[nodiscard]] std::optional<std::size_t> proxy_index(std::string_view name) const noexcept;
  [[nodiscard]] std::optional<std::size_t> server_index(std::string_view upstream,
                                                        std::string_view address) const noexcept;
  // From the health checker of generation `generation` after each check of server `server`
  // (server_index()): `up` its verdict after this check, `last_check_ok` this check's result.
  // Ignored unless `generation` is the newest (the master's set_generation), so that a draining
  // generation's checker does not overwrite the new one's verdicts.
  void set_health(std::size_t server, int generation, bool up, bool last_check_ok,
                  std::int64_t at) noexcept;
  // Test only (FERRY_TEST_SCRIBBLE_STATS): what a worker gone wrong would do. Garbage over every
  // word of the counters this worker may write (its block, its gauge, every health word), then
  // over the registry's counts, lengths and seqlock words if it can make them writable. Returns
  // what happened, for the log.
  std::string scribble(std::size_t slot) noexcept;

  // ---- anyone ----------------------------------------------------------------------------------

  // Totals as of `now` (Unix seconds; the other overload reads the clock). Consistent with the
  // master's folds: a worker reaped meanwhile is counted once, so totals never go back.
  [[nodiscard]] Snapshot snapshot(std::int64_t now) const;
  [[nodiscard]] Snapshot snapshot() const;

  // For tests: where the segments are.
  struct Segment {
    const void* data;
    std::size_t size;
  };
  [[nodiscard]] Segment registry_segment() const noexcept;
  [[nodiscard]] Segment counters_segment() const noexcept;

 private:
  struct Registry;
  struct Counters;

  // How a snapshot waits for the seqlocks: as long as a live writer needs, a bounded number of
  // tries (an untrusted segment a writer may still change), or not at all (no writer left).
  enum class Patience : std::uint8_t { wait, bounded, none };

  StatsTable() = default;
  [[nodiscard]] std::optional<Snapshot> take_snapshot(std::int64_t now, Patience patience) const;
  [[nodiscard]] std::uint32_t proxies_known() const noexcept;
  template <typename Scan>
  void scan_names(Scan&& scan) const noexcept;
  std::optional<std::size_t> reclaim_proxy() noexcept;
  std::optional<std::size_t> reclaim_server() noexcept;
  // The epoch of the oldest configuration a live worker was forked with (max: none alive).
  [[nodiscard]] std::uint64_t oldest_live_epoch() const noexcept;
  [[nodiscard]] std::uint32_t servers_known() const noexcept;

  Registry* writable_ = nullptr;        // the master's view; nullptr in a worker
  const Registry* registry_ = nullptr;  // the read-only view, everyone's
  Counters* counters_ = nullptr;
  // The master's own counts of the registry: it never reads them back from shared memory.
  std::uint32_t proxy_count_ = 0;
  std::uint32_t server_count_ = 0;
  // fold()'s copies of a dead worker's block, made with the table: fold() is noexcept, and an
  // allocation failing there would end the master.
  std::unique_ptr<Snapshot::Proxy[]> fold_proxies_ =
      std::make_unique<Snapshot::Proxy[]>(kMaxProxies);
  std::unique_ptr<Snapshot::Server[]> fold_servers_ =
      std::make_unique<Snapshot::Server[]>(kMaxServers);
  // The old master's reload counts as last taken in (added by their growth: it may reload
  // while it drains) and whether its last reload record has been taken.
  std::uint64_t old_reloads_ok_ = 0;
  std::uint64_t old_reloads_failed_ = 0;
  bool reloads_inherited_ = false;
  std::size_t max_proxies_ = kMaxProxies;
  std::size_t max_servers_ = kMaxServers;
  // The master's own record of its live workers: the epoch of the configuration each was forked
  // with (0: none in the slot), for reclaiming names.
  std::uint64_t worker_epochs_[kSlots]{};
  // Names an old master's totals are still being taken into: not to be reclaimed yet.
  bool inheriting_proxy_[kMaxProxies]{};
  bool inheriting_server_[kMaxServers]{};
  // The old master's reclaimed totals as last taken in (ours add up what they grow by).
  Snapshot::Proxy inherited_reclaimed_proxies_;
  Snapshot::Server inherited_reclaimed_servers_;
  // The master's, for the next binary upgrade to pass on; closed in the workers.
  event::UniqueFd registry_fd_;
  event::UniqueFd counters_fd_;
};

}  // namespace ferry::worker
