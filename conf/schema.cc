// The schema of everything but the proxies: the top-level settings, log, events, thread_pool,
// upstreams with their servers and health checks, and status.
#include "conf/schema.h"

#include <unistd.h>

#include <algorithm>
#include <string>

#include "conf/checks.h"
#include "conf/field.h"
#include "conf/srv.h"
#include "conf/user.h"

namespace ferry::conf {
namespace {

constexpr Field<LogSettings> kLog[] = {
    choice_field<&LogSettings::level, kLogLevels>("level"),
    string_field<&LogSettings::path, false>("path"),
};

constexpr Field<EventsSettings> kEvents[] = {
    bool_field<&EventsSettings::accept_mutex>("accept_mutex"),
    duration_field<&EventsSettings::accept_mutex_delay, 1>("accept_mutex_delay"),
    bool_field<&EventsSettings::multi_accept>("multi_accept"),
    int_field<&EventsSettings::epoll_events, 1, 65536>("epoll_events"),
    bool_field<&EventsSettings::io_uring>("io_uring"),
    int_field<&EventsSettings::io_uring_min_events, 1, 65536>("io_uring_min_events"),
};

constexpr Field<ThreadPoolSettings> kThreadPool[] = {
    int_field<&ThreadPoolSettings::threads, 1, 512>("threads"),
    int_field<&ThreadPoolSettings::max_queue, 1, 1 << 24>("max_queue"),
};

constexpr Field<HealthCheck> kHealthCheck[] = {
    duration_field<&HealthCheck::interval, 1>("interval"),
    duration_field<&HealthCheck::timeout, 1>("timeout"),
    int_field<&HealthCheck::fails, 1, 1000>("fails"),
    int_field<&HealthCheck::passes, 1, 1000>("passes"),
    string_field<&HealthCheck::send>("send"),
    string_field<&HealthCheck::expect>("expect"),
};

void read_service(Reader& r, const Setting& s, Server& sv) {
  auto name = r.string(s, false);
  if (!name) return;
  if (!is_service_name(*name)) {
    r.error(s, "\"" + *name + "\" is not an SRV name \"_service._proto.domain\"");
    return;
  }
  sv.service = *name;
}

// A field printed only for a server with an address: a service's records give it.
template <auto M>
constexpr Field<Server> address_only(Field<Server> f) {
  return {f.name, f.read, [](Writer& w, std::string_view n, const Server& sv) {
            if (sv.service.empty()) w.set(n, sv.*M);
          }};
}

// `address` or `service`, one of them (read_servers() checks): neither is required alone.
constexpr Field<Server> kServer[] = {
    {"address",
     [](Reader& r, const Setting& s, Server& sv) { assign(sv.address, r.address(s, false)); },
     [](Writer& w, std::string_view n, const Server& sv) {
       if (sv.service.empty()) w.set_string(n, sv.address.text);
     }},
    {"service", read_service,
     [](Writer& w, std::string_view n, const Server& sv) {
       if (!sv.service.empty()) w.set_string(n, sv.service);
     }},
    address_only<&Server::weight>(int_field<&Server::weight, 1, kMaxWeight>("weight")),
    int_field<&Server::max_fails, 0, 1000>("max_fails"),
    duration_field<&Server::fail_timeout>("fail_timeout"),
    int_field<&Server::max_conns, 0, 1 << 24>("max_conns"),
    // Printed only when given: a server without it follows its upstream's.
    {"slow_start",
     [](Reader& r, const Setting& s, Server& sv) {
       if (auto v = r.duration(s)) sv.slow_start = *v;
     },
     [](Writer& w, std::string_view n, const Server& sv) {
       if (sv.slow_start) w.set_duration(n, *sv.slow_start);
     }},
    address_only<&Server::backup>(bool_field<&Server::backup>("backup")),
    bool_field<&Server::down>("down"),
};

// Exactly one of `address` and `service`; a service's records give the weights and backups.
// False when not so: the server is not resolved then (no DNS query for a server in error).
bool check_server_kind(Reader& r, const Setting& e) {
  const Setting* address = Reader::member(e, "address");
  const Setting* service = Reader::member(e, "service");
  if (address == nullptr && service == nullptr) {
    r.missing(e, "address",
              "a server needs an address \"host:port\" (or a service \"_service._proto.domain\")");
    return false;
  }
  if (service == nullptr) return true;
  bool ok = true;
  if (address != nullptr) {
    r.error(*service, "a server has an address or a service, not both");
    ok = false;
  }
  for (const char* key : {"weight", "backup"}) {
    if (const Setting* s = Reader::member(e, key)) {
      r.error(*s, std::string(key) +
                      " cannot be set with a service: its SRV records give the weights, and "
                      "their priorities the backups");
      ok = false;
    }
  }
  return ok;
}

// As nginx Plus: hashing maps a client to a server by its points on the ring, not by weights to
// ramp (moving keys away and back would break the affinity hashing is for).
constexpr const char* kNoSlowStartWithHash =
    "slow_start cannot be used with balance = \"hash\" (a client's server follows its address "
    "alone)";

void read_servers(Reader& r, const Setting& s, Upstream& up) {
  r.groups(s, [&](const Setting& e) {
    Server& sv = up.servers.emplace_back();
    read_fields<Server>(r, e, kServer, sv);
    if (!check_server_kind(r, e)) {
      // Said why; nothing to resolve.
    } else if (auto* a = Reader::member(e, "address")) {
      resolve_server(r, *a, up, sv);
    } else if (auto* svc = Reader::member(e, "service")) {
      resolve_server(r, *svc, up, sv);
    }
    if (up.balance == Balance::hash && sv.backup) {
      r.error(e["backup"], "backup servers cannot be used with balance = \"hash\"");
    }
    if (up.balance == Balance::hash && sv.slow_start.value_or(Msec{0}) > Msec{0}) {
      r.error(e["slow_start"], kNoSlowStartWithHash);
    }
  });
  if (s.getType() == Setting::TypeList && s.getLength() == 0) {
    r.error(s, "an upstream needs at least one server");
  }
}

// In this order: `servers` and `slow_start` are read knowing the balance.
constexpr Field<Upstream> kUpstream[] = {
    {"name", [](Reader& r, const Setting& s, Upstream& up) { read_name(r, s, up.name); },
     [](Writer& w, std::string_view n, const Upstream& up) { w.set_string(n, up.name); },
     "every upstream needs a name"},
    choice_field<&Upstream::balance, kBalances>("balance"),
    duration_field<&Upstream::resolve_interval>("resolve_interval"),
    bool_field<&Upstream::resolve_required>("resolve_required"),
    {"slow_start",
     [](Reader& r, const Setting& s, Upstream& up) {
       assign(up.slow_start, r.duration(s));
       if (up.balance == Balance::hash && up.slow_start > Msec{0}) {
         r.error(s, kNoSlowStartWithHash);
       }
     },
     [](Writer& w, std::string_view n, const Upstream& up) { w.set_duration(n, up.slow_start); }},
    {"servers", read_servers,
     [](Writer& w, std::string_view n, const Upstream& up) {
       print_list<Server>(w, n, all_of(up.servers),
                          [&](const Server& sv) { print_fields<Server>(w, kServer, sv); });
     },
     "an upstream needs at least one server"},
    {"health_check",
     [](Reader& r, const Setting& s, Upstream& up) {
       HealthCheck hc;
       if (r.is_group(s)) read_fields<HealthCheck>(r, s, kHealthCheck, hc);
       up.health_check = hc;
     },
     [](Writer& w, std::string_view n, const Upstream& up) {
       if (!up.health_check) return;
       w.open(std::string(n) + " = {");
       print_fields<HealthCheck>(w, kHealthCheck, *up.health_check);
       w.close("};");
     }},
    {"tls", [](Reader& r, const Setting& s, Upstream& up) { read_client_tls(r, s, up.tls); },
     [](Writer& w, std::string_view n, const Upstream& up) { print_client_tls(w, n, up.tls); }},
};

constexpr const char* kDefaultStatusListen = "127.0.0.1:9145";

bool is_bare_port(std::string_view text) {
  return !text.empty() && text.size() <= 5 &&
         std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The metrics must not reach the network unless asked: no listen, or a bare port, means
// loopback (unlike a proxy's listen, where "*:port" is spelled out).
void read_status_listen(Reader& r, const Setting& s, StatusSettings& st) {
  if (s.getType() == Setting::TypeString && is_bare_port(s.c_str())) {
    auto parsed = parse_address(std::string("127.0.0.1:") + s.c_str());
    if (auto* why = std::get_if<std::string>(&parsed)) {
      r.error(s, *why);
    } else {
      st.listen = std::get<Address>(std::move(parsed));
    }
  } else {
    assign(st.listen, r.address(s));
  }
}

constexpr Field<StatusSettings> kStatus[] = {
    {"listen", read_status_listen,
     [](Writer& w, std::string_view n, const StatusSettings& st) {
       w.set_string(n, st.listen.text);
     }},
    {"access", [](Reader& r, const Setting& s, StatusSettings& st) { st.access = r.access(s); },
     [](Writer& w, std::string_view n, const StatusSettings& st) { w.rules(n, st.access); }},
};

// A group setting read through `Fields`, printed as NAME = { ... };.
template <auto M, const auto& Fields>
constexpr Field<Config> group_field(std::string_view name) {
  using G = typename MemberOf<decltype(M)>::Value;
  return {name,
          [](Reader& r, const Setting& s, Config& cfg) {
            if (r.is_group(s)) read_fields<G>(r, s, Fields, cfg.*M);
          },
          [](Writer& w, std::string_view n, const Config& cfg) {
            w.open(std::string(n) + " = {");
            print_fields<G>(w, Fields, cfg.*M);
            w.close("};");
          }};
}

void read_worker_processes(Reader& r, const Setting& s, Config& cfg) {
  if (s.getType() == Setting::TypeString && std::string_view(s.c_str()) == "auto") {
    const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
    cfg.worker_processes = cpus > 0 ? static_cast<int>(cpus) : 1;
    cfg.worker_processes_auto = true;
  } else if (s.getType() == Setting::TypeString) {
    r.error(s, "\"" + std::string(s.c_str()) + "\" is not \"auto\" or a number of workers");
  } else {
    assign(cfg.worker_processes, r.int32(s, 1, 1024));
  }
}

void read_user(Reader& r, const Setting& s, Config& cfg) {
  auto name = r.string(s, false);
  if (!name) return;
  // On the reload thread: getpwnam()'s one buffer is not for threads.
  const auto found = look_up_user(*name);
  if (const auto* why = std::get_if<std::string>(&found)) {
    r.error(s, *why);
  } else {
    cfg.user = *name;
  }
}

void read_upstreams(Reader& r, const Setting& s, Config& cfg) {
  r.groups(s, [&](const Setting& e) {
    Upstream& up = cfg.upstreams.emplace_back();
    read_fields<Upstream>(r, e, kUpstream, up);
  });
  if (s.getType() == Setting::TypeList) check_unique_names(r, s, "upstream");
}

void read_proxies(Reader& r, const Setting& s, Config& cfg) {
  r.upstreams = &cfg.upstreams;
  r.groups(s, [&](const Setting& e) {
    cfg.proxies.push_back(read_proxy(r, e));
    if (Reader::member(e, "reload_sessions") == nullptr) {
      cfg.proxies.back().reload_sessions = cfg.reload_sessions;
    }
  });
  if (s.getType() == Setting::TypeList) check_unique_names(r, s, "proxy");
}

// In this order: the proxies are read knowing the upstreams.
constexpr Field<Config> kRoot[] = {
    {"worker_processes", read_worker_processes,
     [](Writer& w, std::string_view n, const Config& cfg) {
       if (cfg.worker_processes_auto) {
         w.set_string(n, "auto");
       } else {
         w.set(n, cfg.worker_processes);
       }
     }},
    int_field<&Config::worker_connections, 2, 1 << 20>("worker_connections"),
    {"worker_rlimit_nofile",
     [](Reader& r, const Setting& s, Config& cfg) {
       if (auto v = r.integer(s, 1, 1 << 30)) cfg.worker_rlimit_nofile = static_cast<long>(*v);
     },
     [](Writer& w, std::string_view n, const Config& cfg) {
       if (cfg.worker_rlimit_nofile) w.set(n, std::to_string(*cfg.worker_rlimit_nofile));
     }},
    duration_field<&Config::worker_shutdown_timeout>("worker_shutdown_timeout"),
    choice_field<&Config::worker_cpu_affinity, kCpuAffinities>("worker_cpu_affinity"),
    // Before the proxies: it is their default.
    choice_field<&Config::reload_sessions, kReloadSessions>("reload_sessions"),
    int_field<&Config::max_draining_generations, 1, 1000>("max_draining_generations"),
    {"user", read_user,
     [](Writer& w, std::string_view n, const Config& cfg) {
       if (cfg.user) w.set_string(n, *cfg.user);
     }},
    string_field<&Config::pid_file, false>("pid_file"),
    string_field<&Config::state_file, true>("state_file"),
    {"control_readers",
     [](Reader& r, const Setting& s, Config& cfg) {
       r.strings(s, [&](const Setting& e) {
         const std::string name = e.c_str();
         // Looked up now, so that a typo fails -t rather than the first command.
         const auto found = look_up_user(name);
         if (const auto* why = std::get_if<std::string>(&found)) {
           r.error(e, *why);
         } else {
           cfg.control_readers.push_back(name);
         }
       });
     },
     [](Writer& w, std::string_view n, const Config& cfg) {
       if (!cfg.control_readers.empty()) w.strings(n, cfg.control_readers);
     }},
    group_field<&Config::log, kLog>("log"),
    group_field<&Config::events, kEvents>("events"),
    group_field<&Config::thread_pool, kThreadPool>("thread_pool"),
    {"upstreams", read_upstreams,
     [](Writer& w, std::string_view n, const Config& cfg) {
       std::vector<const Upstream*> written;  // the implicit ones are the proxies' `upstream`
       for (const Upstream& u : cfg.upstreams) {
         if (!u.implicit) written.push_back(&u);
       }
       print_list<Upstream>(w, n, written,
                            [&](const Upstream& u) { print_fields<Upstream>(w, kUpstream, u); });
     }},
    {"proxies", read_proxies,
     [](Writer& w, std::string_view n, const Config& cfg) {
       print_list<Proxy>(w, n, all_of(cfg.proxies), [&](const Proxy& p) { print_proxy(w, p); });
     }},
    {"status",
     [](Reader& r, const Setting& s, Config& cfg) {
       if (!r.is_group(s)) return;
       StatusSettings st;
       read_fields<StatusSettings>(r, s, kStatus, st);
       if (!Reader::member(s, "listen")) {
         st.listen = std::get<Address>(parse_address(kDefaultStatusListen));
       }
       cfg.status = std::move(st);
     },
     [](Writer& w, std::string_view n, const Config& cfg) {
       if (!cfg.status) return;
       w.open(std::string(n) + " = {");
       print_fields<StatusSettings>(w, kStatus, *cfg.status);
       w.close("};");
     }},
};

}  // namespace

void read_name(Reader& r, const Setting& s, std::string& out) {
  assign(out, r.string(s, false));
  if (!out.empty() && out.front() == '(') {
    r.error(s, "\"" + out + "\": a name may not begin with '(' (kept for ferry's own entries)");
  }
}

void resolve_server(Reader& r, const Setting& at, const Upstream& up, Server& sv) {
  if (!r.resolves()) return;
  std::string why;
  if (!sv.service.empty()) {
    if (!sv.address.text.empty()) return;  // both given: said already
    std::string skipped;
    auto found = resolve_service(sv.service, &skipped);
    if (auto* list = std::get_if<std::vector<Endpoint>>(&found)) {
      sv.addresses = std::move(*list);
      if (!skipped.empty()) r.warn(at, "service \"" + sv.service + "\": " + skipped);
      return;
    }
    why = std::get<std::string>(found);
  } else {
    if (sv.address.text.empty()) return;
    auto all = resolve_all(sv.address);
    if (auto* list = std::get_if<std::vector<Address>>(&all)) {
      sv.addresses = sv.endpoints_of(std::move(*list));
      return;
    }
    why = std::get<std::string>(all);
  }
  if (up.resolve_required) {
    r.error(at, why + " (resolve_required is set)");
  } else if (!sv.down) {
    r.warn(at, why + "; the server stays unavailable until the name resolves");
  }
}

void read_root(Reader& r, const Setting& root, Config& cfg) {
  read_fields<Config>(r, root, kRoot, cfg);
  // Comparing addresses takes them resolved.
  if (r.resolves()) check_listen_addresses(r, root, cfg);
}

void print_root(Writer& w, const Config& cfg) { print_fields<Config>(w, kRoot, cfg); }

}  // namespace ferry::conf
