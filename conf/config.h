// Config: the typed, validated, immutable configuration of ../shared/spec/ferry.md. Every value
// is already converted (durations, sizes, addresses, CIDRs, enums) and every default filled in.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "conf/address.h"
#include "conf/tls_settings.h"

namespace ferry::conf {

using Msec = std::chrono::milliseconds;

enum class LogLevel { trace, debug, info, warn, error, critical };
enum class CpuAffinity { off, automatic };
enum class Balance { round_robin, least_conn, hash };
enum class ProxyProtocol { off, v1, v2 };
// What a reload (or a binary upgrade) does with a proxy's established sessions: hand them to
// the new workers, or leave them to finish in the old ones.
enum class ReloadSessions { move, drain };

struct LogSettings {
  LogLevel level = LogLevel::info;
  std::string path = "stderr";

  bool operator==(const LogSettings&) const = default;
};

struct EventsSettings {
  bool accept_mutex = false;
  Msec accept_mutex_delay{500};
  bool multi_accept = false;
  int epoll_events = 512;
  // Each loop iteration's sends go to the kernel in one io_uring_enter (where available).
  bool io_uring = true;
  // ... when an epoll_wait returned at least this many events (fewer: direct calls).
  int io_uring_min_events = 4;

  bool operator==(const EventsSettings&) const = default;
};

struct ThreadPoolSettings {
  int threads = 4;
  int max_queue = 65536;

  bool operator==(const ThreadPoolSettings&) const = default;
};

// One address a server stands for, with the weight and backup flag it serves with: the server's
// own for a literal address or a host name; for a DNS SRV service, its record's (a record's
// target gives the address, its port the port, its weight the weight, a priority above the
// lowest one present makes it a backup).
struct Endpoint {
  Address address;
  int weight = 1;
  bool backup = false;
  // The name this address was found under, for TLS origination to verify and send as SNI: an
  // SRV record's target (lower case, no trailing dot). Empty for a server's own address or host
  // name: the name written for the server serves then.
  std::string host;

  bool operator==(const Endpoint&) const = default;
};

// The highest weight a server (or an SRV record, clamped to it) may have.
inline constexpr int kMaxWeight = 1000;

struct Server {
  // As written; a host name is left unresolved here (length 0) and stands for `addresses`.
  // Empty when the server names a `service` instead.
  Address address;
  // A DNS SRV name ("_pg._tcp.db.service.consul") whose records give the server's targets,
  // ports and weights; empty for a server with an `address`.
  std::string service;
  // Every address the server stands for, as resolved at load: the literal address itself, or
  // what the name or the service resolved to (each is a server of the upstream, as in nginx).
  // Empty: the name did not resolve; the workers retry until it does.
  std::vector<Endpoint> addresses;
  int weight = 1;
  int max_fails = 1;
  Msec fail_timeout{10'000};
  int max_conns = 0;  // 0 = no limit
  // Its own slow start period; none: the upstream's.
  std::optional<Msec> slow_start;
  bool backup = false;
  bool down = false;

  // The server's name in logs and statistics: its address as written, or its service.
  [[nodiscard]] const std::string& name() const noexcept {
    return service.empty() ? address.text : service;
  }
  // `list` as this server's endpoints: each with the server's weight and backup flag.
  [[nodiscard]] std::vector<Endpoint> endpoints_of(std::vector<Address> list) const {
    std::vector<Endpoint> out;
    out.reserve(list.size());
    for (Address& a : list) out.push_back({std::move(a), weight, backup, {}});
    return out;
  }

  bool operator==(const Server&) const = default;
};

struct HealthCheck {
  Msec interval{5'000};
  Msec timeout{1'000};
  int fails = 3;
  int passes = 2;
  std::string send;
  std::string expect;

  bool operator==(const HealthCheck&) const = default;
};

struct Upstream {
  std::string name;
  Balance balance = Balance::round_robin;
  Msec resolve_interval{30'000};
  // A server name that does not resolve fails the load (else: a warning, and retries).
  bool resolve_required = false;
  // How long a server that comes back takes to reach its full weight (0: at once); a server's
  // own setting overrides it.
  Msec slow_start{0};
  std::vector<Server> servers;
  std::optional<HealthCheck> health_check;
  // Made for a proxy's `upstream = "host:port"` (named by that text, every default): not
  // written by -T, where the proxy names the address.
  bool implicit = false;
  // Connections to the servers are TLS when set.
  std::optional<ClientTls> tls;

  bool operator==(const Upstream&) const = default;
};

// One "allow"/"deny" rule; `all` matches every address.
struct AccessRule {
  bool allow = true;
  bool all = false;
  int family = 0;           // AF_INET or AF_INET6 when !all
  std::uint8_t addr[16]{};  // network address, host bits zero
  int prefix = 0;           // mask length
  std::string text;         // as written, for -T and messages

  bool operator==(const AccessRule&) const = default;
};

// One way a proxy that routes by the TLS ClientHello sends a session on (passthrough: the bytes
// are not decrypted). The first route, in the order written, whose server names and ALPN
// protocols both match the hello's takes the session; a route with neither matches any hello.
struct Route {
  std::string name;  // for logs and statistics: as written, else the upstream's text
  // Lowercase names, exact or "*.suffix" (any name ending in ".suffix"); empty: any name, none
  // included.
  std::vector<std::string> server_names;
  std::vector<std::string> alpn;  // protocols, any of which the client must offer; empty: any
  std::string upstream;           // as Proxy::upstream
  std::optional<Address> upstream_address;

  bool operator==(const Route&) const = default;
};

struct Proxy {
  std::string name;
  std::vector<Address> listen;
  // An upstream's name (the implicit one's with `upstream_address`). With `routes`, the default
  // route's (empty: none, a hello no route takes is refused).
  std::string upstream;
  // `upstream = "host:port"`, as written (a name unresolved): served by an implicit upstream of
  // that one server, so every address of the name serves and follows re-resolution.
  std::optional<Address> upstream_address;
  // Routing by the TLS ClientHello's server name and ALPN (empty: every session to `upstream`).
  std::vector<Route> routes;
  // How long a routing proxy waits for the whole ClientHello.
  Msec preread_timeout{30'000};
  bool reuseport = false;
  int backlog = 511;
  // TCP_DEFER_ACCEPT (nginx's `deferred`, HAProxy's `defer-accept`): a connection is accepted
  // once its client has sent bytes, a wake-up fewer per connection; for client-speaks-first
  // protocols only (a server that greets first would wait for a client waiting for it).
  bool deferred_accept = false;
  Msec connect_timeout{5'000};
  Msec idle_timeout{600'000};
  // A side's end (its FIN, passed on) leaves the other side's stream open until it ends too
  // (HAProxy's way, nginx's proxy_half_close on); false: the first end closes the session.
  bool half_close = true;
  int next_upstream_tries = 3;    // 0 = all servers
  Msec next_upstream_timeout{0};  // 0 = no limit
  std::size_t buffer_size = 16 * 1024;
  bool splice = true;
  bool tcp_nodelay = true;
  bool so_keepalive = false;
  // TCP_FASTOPEN_CONNECT on server sockets (HAProxy's `tfo`): once the kernel holds a server's
  // Fast Open cookie, the connect waits for the first bytes and sends them in the SYN. For
  // client-speaks-first protocols; a server refusing such a connect is known only after them.
  bool fastopen_connect = false;
  ProxyProtocol send_proxy_protocol = ProxyProtocol::off;
  bool accept_proxy_protocol = false;
  // The senders whose PROXY header is believed (allowing rules; `all` possible). Empty: every
  // sender the access rules let in, as before the setting existed (the loader warns).
  std::vector<AccessRule> accept_proxy_protocol_from;
  std::vector<AccessRule> access;  // empty = allow all
  int max_conns_per_client = 0;    // 0 = off
  // What max_conns_per_client counts as one client: the address's network of this length.
  int client_ipv4_prefix = 32;
  int client_ipv6_prefix = 64;
  std::string access_log = "/var/log/ferry/access.log";   // "off" = none
  ReloadSessions reload_sessions = ReloadSessions::move;  // the top level's when not set
  // Clients' connections are TLS, terminated here, when set.
  std::optional<ServerTls> tls;

  bool operator==(const Proxy&) const = default;
};

struct StatusSettings {
  Address listen;
  std::vector<AccessRule> access;

  bool operator==(const StatusSettings&) const = default;
};

struct Config {
  int worker_processes = 1;  // "auto" already resolved to the online CPUs
  bool worker_processes_auto = false;
  int worker_connections = 16384;
  std::optional<long> worker_rlimit_nofile;
  Msec worker_shutdown_timeout{30'000};                   // 0 = wait for every connection
  ReloadSessions reload_sessions = ReloadSessions::move;  // every proxy's default
  // Old generations still draining after reloads; past this the oldest is stopped at once
  // (HAProxy's mworker-max-reloads, whose default this is). Moved sessions leave none behind.
  int max_draining_generations = 50;
  CpuAffinity worker_cpu_affinity = CpuAffinity::automatic;
  std::optional<std::string> user;
  std::string pid_file = "/run/ferry/ferry.pid";
  // Where the operator's runtime changes of servers are kept across restarts ("" = nowhere).
  std::string state_file;
  // Users who may run the control socket's read-only commands (show, status, ready) besides
  // root, the master's own user and `user`, who may run them all.
  std::vector<std::string> control_readers;
  LogSettings log;
  EventsSettings events;
  ThreadPoolSettings thread_pool;
  std::vector<Upstream> upstreams;
  std::vector<Proxy> proxies;
  std::optional<StatusSettings> status;

  bool operator==(const Config&) const = default;
};

}  // namespace ferry::conf
