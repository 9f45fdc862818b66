// The schema walk: every setting of the spec checked for type and range and converted once;
// unknown names, duplicates and dangling references reported with file and line.
#include "conf/loader.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <functional>
#include <initializer_list>
#include <map>
#include <tuple>
#include <utility>
#include <variant>

#include <libconfig.h++>

#include "conf/lexical.h"
#include "conf/source.h"
#include "conf/user.h"
#include "conf/values.h"

namespace ferry::conf {
namespace {

using libconfig::Setting;

const char* type_name(const Setting& s) {
  switch (s.getType()) {
    case Setting::TypeInt:
    case Setting::TypeInt64: return "an integer";
    case Setting::TypeFloat: return "a float";
    case Setting::TypeString: return "a string";
    case Setting::TypeBoolean: return "a boolean";
    case Setting::TypeGroup: return "a group { ... }";
    case Setting::TypeArray: return "an array [ ... ]";
    case Setting::TypeList: return "a list ( ... )";
    default: return "nothing";
  }
}

template <typename T>
void assign(T& field, std::optional<T>&& value) {
  if (value) field = std::move(*value);
}

// Reads settings out of the libconfig tree, recording each problem against its setting.
class Reader {
 public:
  Reader(const Source& src, std::vector<ConfigError>& errors, std::vector<ConfigError>& warnings,
         HostNames names)
      : src_(src), errors_(errors), warnings_(warnings), names_(names) {}

  ~Reader() {
    flush(pending_errors_, errors_);
    flush(pending_warnings_, warnings_);
  }
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  void error(const Setting& s, const std::string& message) {
    report(pending_errors_, s, s.getPath(), message);
  }
  void warn(const Setting& s, const std::string& message) {
    report(pending_warnings_, s, s.getPath(), message);
  }
  // For a member that is missing: reported at its group's line under the member's path.
  void missing(const Setting& group, const std::string& name, const std::string& why) {
    report(pending_errors_, group, join(group, name), "missing: " + why);
  }
  std::string where(const Setting& s) const {
    const auto [file, line] = src_.origin(static_cast<int>(s.getSourceLine()));
    return file + ':' + std::to_string(line);
  }

  // Every named member of `group` must be one of `known`; the others are reported with the
  // closest known name when it is near.
  void only(const Setting& group, std::initializer_list<std::string_view> known) {
    for (const Setting& m : group) {
      const char* name = m.getName();
      if (name == nullptr) continue;
      if (std::find(known.begin(), known.end(), std::string_view(name)) != known.end()) continue;
      std::string_view best;
      std::size_t best_distance = SIZE_MAX;
      for (std::string_view k : known) {
        const std::size_t d = edit_distance(name, k);
        if (d < best_distance) {
          best_distance = d;
          best = k;
        }
      }
      const std::size_t len = std::string_view(name).size();
      if (best_distance <= std::max<std::size_t>(2, len / 4)) {
        error(m, "unknown setting; did you mean \"" + std::string(best) + "\"?");
      } else {
        error(m, "unknown setting");
      }
    }
  }

  static const Setting* member(const Setting& group, const char* name) {
    return group.exists(name) ? &group[name] : nullptr;
  }

  bool expect(const Setting& s, Setting::Type type, const char* what) {
    if (s.getType() == type) return true;
    error(s, std::string("expected ") + what + ", found " + type_name(s));
    return false;
  }
  bool is_group(const Setting& s) { return expect(s, Setting::TypeGroup, "a group { ... }"); }

  std::optional<long long> integer(const Setting& s, long long min, long long max) {
    if (s.getType() != Setting::TypeInt && s.getType() != Setting::TypeInt64) {
      error(s, std::string("expected an integer, found ") + type_name(s));
      return std::nullopt;
    }
    const long long v =
        s.getType() == Setting::TypeInt64 ? static_cast<long long>(s) : static_cast<int>(s);
    if (v < min || v > max) {
      error(s, std::to_string(v) + " is out of range (" + std::to_string(min) + "-" +
                   std::to_string(max) + ")");
      return std::nullopt;
    }
    return v;
  }
  std::optional<int> int32(const Setting& s, int min, int max) {
    auto v = integer(s, min, max);
    if (!v) return std::nullopt;
    return static_cast<int>(*v);
  }

  std::optional<bool> boolean(const Setting& s) {
    if (!expect(s, Setting::TypeBoolean, "true or false")) return std::nullopt;
    return static_cast<bool>(s);
  }

  std::optional<std::string> string(const Setting& s, bool allow_empty = true) {
    if (!expect(s, Setting::TypeString, "a string")) return std::nullopt;
    std::string v = s.c_str();
    if (!allow_empty && v.empty()) {
      error(s, "must not be empty");
      return std::nullopt;
    }
    return v;
  }

  std::optional<Msec> duration(const Setting& s, Msec min = Msec{0}) {
    auto text = string(s);
    if (!text) return std::nullopt;
    auto parsed = parse_duration(*text);
    if (auto* why = std::get_if<std::string>(&parsed)) {
      error(s, *why);
      return std::nullopt;
    }
    const Msec v = std::get<Msec>(parsed);
    if (v < min) {
      error(s, "\"" + *text + "\" is too short (at least " + format_duration(min) + ")");
      return std::nullopt;
    }
    return v;
  }

  std::optional<std::size_t> size(const Setting& s, std::size_t min, std::size_t max) {
    std::size_t v = 0;
    if (s.getType() == Setting::TypeString) {
      auto parsed = parse_size(s.c_str());
      if (auto* why = std::get_if<std::string>(&parsed)) {
        error(s, *why);
        return std::nullopt;
      }
      v = std::get<std::size_t>(parsed);
    } else if (s.getType() == Setting::TypeInt || s.getType() == Setting::TypeInt64) {
      auto n = integer(s, 0, LLONG_MAX);
      if (!n) return std::nullopt;
      v = static_cast<std::size_t>(*n);
    } else {
      error(s, std::string("expected a size (16384 or \"16k\"), found ") + type_name(s));
      return std::nullopt;
    }
    if (v < min || v > max) {
      error(s, format_size(v) + " is out of range (" + format_size(min) + "-" + format_size(max) +
                   ")");
      return std::nullopt;
    }
    return v;
  }

  template <typename E>
  std::optional<E> choice(const Setting& s,
                          std::initializer_list<std::pair<std::string_view, E>> values) {
    auto text = string(s);
    if (!text) return std::nullopt;
    std::string names;
    for (const auto& [name, value] : values) {
      if (name == *text) return value;
      names += (names.empty() ? "\"" : ", \"") + std::string(name) + "\"";
    }
    error(s, "\"" + *text + "\" is not one of " + names);
    return std::nullopt;
  }

  std::optional<Address> address(const Setting& s, bool resolve = true) {
    auto text = string(s);
    if (!text) return std::nullopt;
    auto parsed = parse_address(*text, resolve && resolves());
    if (auto* why = std::get_if<std::string>(&parsed)) {
      error(s, *why);
      return std::nullopt;
    }
    return std::get<Address>(std::move(parsed));
  }

  // An array or list of strings; a single string is taken as a list of one.
  template <typename Each>
  void strings(const Setting& s, Each&& each) {
    if (s.getType() == Setting::TypeString) {
      each(s);
      return;
    }
    if (s.getType() != Setting::TypeArray && s.getType() != Setting::TypeList) {
      error(s, std::string("expected an array of strings [ \"...\", ... ], found ") + type_name(s));
      return;
    }
    for (const Setting& e : s) {
      if (e.getType() != Setting::TypeString) {
        error(e, std::string("expected a string, found ") + type_name(e));
        continue;
      }
      each(e);
    }
  }

  // Access rules, or with parse_network a list of trusted senders.
  std::vector<AccessRule> access(
      const Setting& s, Parsed<AccessRule> (*parse)(std::string_view) = parse_access_rule) {
    std::vector<AccessRule> rules;
    strings(s, [&](const Setting& e) {
      auto parsed = parse(e.c_str());
      if (auto* why = std::get_if<std::string>(&parsed)) {
        error(e, *why);
        return;
      }
      rules.push_back(std::get<AccessRule>(std::move(parsed)));
    });
    return rules;
  }

  // A list ( {...}, ... ) of groups, each handed to `each` with its index.
  template <typename Each>
  void groups(const Setting& s, Each&& each) {
    if (s.getType() != Setting::TypeList) {
      error(s, std::string("expected a list of groups ( { ... }, ... ), found ") + type_name(s));
      return;
    }
    for (int i = 0; i < s.getLength(); ++i) {
      const Setting& e = s[i];
      if (!is_group(e)) continue;
      each(e);
    }
  }

  [[nodiscard]] bool resolves() const noexcept { return names_ == HostNames::resolve; }

 private:
  static std::string join(const Setting& group, const std::string& name) {
    const std::string path = group.getPath();
    return path.empty() ? name : path + '.' + name;
  }
  void report(std::vector<std::pair<int, ConfigError>>& into, const Setting& s, std::string path,
              const std::string& message) {
    const int global = static_cast<int>(s.getSourceLine());
    const auto [file, line] = src_.origin(global);
    into.push_back({global, {file, line, std::move(path), message}});
  }

  static void flush(std::vector<std::pair<int, ConfigError>>& from, std::vector<ConfigError>& to) {
    std::stable_sort(from.begin(), from.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    for (auto& [line, e] : from) to.push_back(std::move(e));
    from.clear();
  }

  const Source& src_;
  std::vector<ConfigError>& errors_;
  std::vector<ConfigError>& warnings_;
  HostNames names_;
  // Problems in the order of the text they are about, whatever order the walk found them in.
  std::vector<std::pair<int, ConfigError>> pending_errors_;
  std::vector<std::pair<int, ConfigError>> pending_warnings_;
};

void read_log(Reader& r, const Setting& g, LogSettings& out) {
  if (!r.is_group(g)) return;
  r.only(g, {"level", "path"});
  if (auto* s = Reader::member(g, "level")) {
    assign(out.level, r.choice<LogLevel>(*s, {{"trace", LogLevel::trace},
                                              {"debug", LogLevel::debug},
                                              {"info", LogLevel::info},
                                              {"warn", LogLevel::warn},
                                              {"error", LogLevel::error},
                                              {"critical", LogLevel::critical}}));
  }
  if (auto* s = Reader::member(g, "path")) assign(out.path, r.string(*s, false));
}

void read_events(Reader& r, const Setting& g, EventsSettings& out) {
  if (!r.is_group(g)) return;
  r.only(g, {"accept_mutex", "accept_mutex_delay", "multi_accept", "epoll_events", "io_uring",
             "io_uring_min_events"});
  if (auto* s = Reader::member(g, "accept_mutex")) assign(out.accept_mutex, r.boolean(*s));
  if (auto* s = Reader::member(g, "accept_mutex_delay")) {
    assign(out.accept_mutex_delay, r.duration(*s, Msec{1}));
  }
  if (auto* s = Reader::member(g, "multi_accept")) assign(out.multi_accept, r.boolean(*s));
  if (auto* s = Reader::member(g, "epoll_events")) assign(out.epoll_events, r.int32(*s, 1, 65536));
  if (auto* s = Reader::member(g, "io_uring")) assign(out.io_uring, r.boolean(*s));
  if (auto* s = Reader::member(g, "io_uring_min_events")) {
    assign(out.io_uring_min_events, r.int32(*s, 1, 65536));
  }
}

void read_thread_pool(Reader& r, const Setting& g, ThreadPoolSettings& out) {
  if (!r.is_group(g)) return;
  r.only(g, {"threads", "max_queue"});
  if (auto* s = Reader::member(g, "threads")) assign(out.threads, r.int32(*s, 1, 512));
  if (auto* s = Reader::member(g, "max_queue")) assign(out.max_queue, r.int32(*s, 1, 1 << 24));
}

HealthCheck read_health_check(Reader& r, const Setting& g) {
  HealthCheck hc;
  if (!r.is_group(g)) return hc;
  r.only(g, {"interval", "timeout", "fails", "passes", "send", "expect"});
  if (auto* s = Reader::member(g, "interval")) assign(hc.interval, r.duration(*s, Msec{1}));
  if (auto* s = Reader::member(g, "timeout")) assign(hc.timeout, r.duration(*s, Msec{1}));
  if (auto* s = Reader::member(g, "fails")) assign(hc.fails, r.int32(*s, 1, 1000));
  if (auto* s = Reader::member(g, "passes")) assign(hc.passes, r.int32(*s, 1, 1000));
  if (auto* s = Reader::member(g, "send")) assign(hc.send, r.string(*s));
  if (auto* s = Reader::member(g, "expect")) assign(hc.expect, r.string(*s));
  return hc;
}

Server read_server(Reader& r, const Setting& g) {
  Server sv;
  r.only(g, {"address", "weight", "max_fails", "fail_timeout", "max_conns", "backup", "down"});
  if (auto* s = Reader::member(g, "address")) {
    assign(sv.address, r.address(*s, false));
  } else {
    r.missing(g, "address", "a server needs an address \"host:port\"");
  }
  if (auto* s = Reader::member(g, "weight")) assign(sv.weight, r.int32(*s, 1, 1000));
  if (auto* s = Reader::member(g, "max_fails")) assign(sv.max_fails, r.int32(*s, 0, 1000));
  if (auto* s = Reader::member(g, "fail_timeout")) assign(sv.fail_timeout, r.duration(*s));
  if (auto* s = Reader::member(g, "max_conns")) assign(sv.max_conns, r.int32(*s, 0, 1 << 24));
  if (auto* s = Reader::member(g, "backup")) assign(sv.backup, r.boolean(*s));
  if (auto* s = Reader::member(g, "down")) assign(sv.down, r.boolean(*s));
  return sv;
}

// A server's addresses. A name that does not resolve is a warning (the workers retry it every
// resolve_interval; nginx refusing to start here is a known pain), or an error when required.
// `at`: the setting a warning or error points at.
void resolve_server(Reader& r, const Setting& at, const Upstream& up, Server& sv) {
  if (sv.address.text.empty() || !r.resolves()) return;
  auto all = resolve_all(sv.address);
  if (auto* list = std::get_if<std::vector<Address>>(&all)) {
    sv.addresses = std::move(*list);
    return;
  }
  const std::string& why = std::get<std::string>(all);
  if (up.resolve_required) {
    r.error(at, why + " (resolve_required is set)");
  } else if (!sv.down) {
    r.warn(at, why + "; the server stays unavailable until the name resolves");
  }
}

// Names in parentheses are the statistics' own entries (the "(reclaimed)" totals of names a
// full registry gave back): a proxy or upstream named so would be shown mixed with them.
void refuse_reserved_name(Reader& r, const Setting& s, const std::string& name) {
  if (!name.empty() && name.front() == '(') {
    r.error(s, "\"" + name + "\": a name may not begin with '(' (kept for ferry's own entries)");
  }
}

Upstream read_upstream(Reader& r, const Setting& g) {
  Upstream up;
  r.only(g, {"name", "balance", "resolve_interval", "resolve_required", "servers", "health_check"});
  if (auto* s = Reader::member(g, "name")) {
    assign(up.name, r.string(*s, false));
    refuse_reserved_name(r, *s, up.name);
  } else {
    r.missing(g, "name", "every upstream needs a name");
  }
  if (auto* s = Reader::member(g, "balance")) {
    assign(up.balance, r.choice<Balance>(*s, {{"round_robin", Balance::round_robin},
                                              {"least_conn", Balance::least_conn},
                                              {"hash", Balance::hash}}));
  }
  if (auto* s = Reader::member(g, "resolve_interval")) assign(up.resolve_interval, r.duration(*s));
  if (auto* s = Reader::member(g, "resolve_required")) assign(up.resolve_required, r.boolean(*s));
  if (auto* s = Reader::member(g, "servers")) {
    r.groups(*s, [&](const Setting& e) {
      up.servers.push_back(read_server(r, e));
      if (auto* a = Reader::member(e, "address")) resolve_server(r, *a, up, up.servers.back());
      if (up.balance == Balance::hash && up.servers.back().backup) {
        r.error(e["backup"], "backup servers cannot be used with balance = \"hash\"");
      }
    });
    if (s->getType() == Setting::TypeList && s->getLength() == 0) {
      r.error(*s, "an upstream needs at least one server");
    }
  } else {
    r.missing(g, "servers", "an upstream needs at least one server");
  }
  if (auto* s = Reader::member(g, "health_check")) up.health_check = read_health_check(r, *s);
  return up;
}

// Whose PROXY header is believed. Without the list, every sender the access rules admit, as
// before the list existed: kept so that an upgrade does not refuse a working balancer, but
// warned, since anyone who can connect may then claim any address (nginx believes no one
// without set_real_ip_from).
void read_proxy_protocol_from(Reader& r, const Setting& g, Proxy& px) {
  const Setting* from = Reader::member(g, "accept_proxy_protocol_from");
  if (from == nullptr) {
    if (px.accept_proxy_protocol) {
      r.warn(g["accept_proxy_protocol"],
             "every sender is believed: any client that can connect may claim any address in "
             "its PROXY header; list the balancers in accept_proxy_protocol_from (\"all\" to "
             "believe every sender)");
    }
    return;
  }
  px.accept_proxy_protocol_from = r.access(*from, parse_network);
  if ((from->getType() == Setting::TypeArray || from->getType() == Setting::TypeList) &&
      from->getLength() == 0) {
    r.error(*from,
            "no sender listed: every PROXY header would be refused (name the balancers, or "
            "\"all\")");
  }
  if (!px.accept_proxy_protocol) r.warn(*from, "no effect without accept_proxy_protocol = true");
}

// `upstream = "host:port"` on a proxy: an upstream of that one server with every default, named
// by the text and shared by the proxies that write the same, so that each address of the name
// serves and the name is re-resolved (and may fail to resolve) as a server's is, as in nginx.
std::string inline_upstream(Reader& r, const Setting& at, const Address& address,
                            std::vector<Upstream>& upstreams) {
  const auto it = std::find_if(upstreams.begin(), upstreams.end(), [&](const Upstream& u) {
    return u.implicit && u.name == address.text;
  });
  if (it != upstreams.end()) return it->name;
  Upstream up;
  up.name = address.text;
  up.implicit = true;
  Server sv;
  sv.address = address;
  resolve_server(r, at, up, sv);
  up.servers.push_back(std::move(sv));
  upstreams.push_back(std::move(up));
  return address.text;
}

Proxy read_proxy(Reader& r, const Setting& g, std::vector<Upstream>& upstreams) {
  Proxy px;
  r.only(g, {"name",
             "listen",
             "upstream",
             "reuseport",
             "backlog",
             "connect_timeout",
             "idle_timeout",
             "next_upstream_tries",
             "next_upstream_timeout",
             "buffer_size",
             "splice",
             "tcp_nodelay",
             "so_keepalive",
             "send_proxy_protocol",
             "accept_proxy_protocol",
             "accept_proxy_protocol_from",
             "access",
             "max_conns_per_client",
             "client_ipv4_prefix",
             "client_ipv6_prefix",
             "access_log"});
  if (auto* s = Reader::member(g, "name")) {
    assign(px.name, r.string(*s, false));
    refuse_reserved_name(r, *s, px.name);
  } else {
    r.missing(g, "name", "every proxy needs a name");
  }
  if (auto* s = Reader::member(g, "listen")) {
    r.strings(*s, [&](const Setting& e) {
      if (auto a = r.address(e)) px.listen.push_back(std::move(*a));
    });
    if ((s->getType() == Setting::TypeArray || s->getType() == Setting::TypeList) &&
        s->getLength() == 0) {
      r.error(*s, "a proxy needs at least one listen address");
    }
  } else {
    r.missing(g, "listen", "a proxy needs at least one listen address");
  }
  if (auto* s = Reader::member(g, "upstream")) {
    if (auto name = r.string(*s, false)) {
      const bool known = std::any_of(upstreams.begin(), upstreams.end(), [&](const Upstream& u) {
        return !u.implicit && u.name == *name;
      });
      if (known) {
        px.upstream = *name;
      } else if (name->find(':') != std::string::npos) {
        px.upstream_address = r.address(*s, false);
        if (px.upstream_address) {
          px.upstream = inline_upstream(r, *s, *px.upstream_address, upstreams);
        }
      } else {
        std::string hint;
        std::size_t best = 3;  // suggest only names within two edits
        for (const Upstream& u : upstreams) {
          if (u.implicit) continue;
          if (const std::size_t d = edit_distance(u.name, *name); d < best) {
            best = d;
            hint = "; did you mean \"" + u.name + "\"?";
          }
        }
        r.error(*s, "no upstream named \"" + *name + "\"" + hint);
      }
    }
  } else {
    r.missing(g, "upstream", "name an upstream, or give one \"host:port\"");
  }
  if (auto* s = Reader::member(g, "reuseport")) assign(px.reuseport, r.boolean(*s));
  if (auto* s = Reader::member(g, "backlog")) assign(px.backlog, r.int32(*s, 1, 65535));
  if (auto* s = Reader::member(g, "connect_timeout")) {
    assign(px.connect_timeout, r.duration(*s, Msec{1}));
  }
  if (auto* s = Reader::member(g, "idle_timeout")) assign(px.idle_timeout, r.duration(*s));
  if (auto* s = Reader::member(g, "next_upstream_tries")) {
    assign(px.next_upstream_tries, r.int32(*s, 0, 1000));
  }
  if (auto* s = Reader::member(g, "next_upstream_timeout")) {
    assign(px.next_upstream_timeout, r.duration(*s));
  }
  if (auto* s = Reader::member(g, "buffer_size")) {
    assign(px.buffer_size, r.size(*s, 1024, std::size_t{64} << 20));
  }
  if (auto* s = Reader::member(g, "splice")) assign(px.splice, r.boolean(*s));
  if (auto* s = Reader::member(g, "tcp_nodelay")) assign(px.tcp_nodelay, r.boolean(*s));
  if (auto* s = Reader::member(g, "so_keepalive")) assign(px.so_keepalive, r.boolean(*s));
  if (auto* s = Reader::member(g, "send_proxy_protocol")) {
    assign(px.send_proxy_protocol, r.choice<ProxyProtocol>(*s, {{"off", ProxyProtocol::off},
                                                                {"v1", ProxyProtocol::v1},
                                                                {"v2", ProxyProtocol::v2}}));
  }
  if (auto* s = Reader::member(g, "accept_proxy_protocol")) {
    assign(px.accept_proxy_protocol, r.boolean(*s));
  }
  if (auto* s = Reader::member(g, "access")) px.access = r.access(*s);
  if (auto* s = Reader::member(g, "max_conns_per_client")) {
    assign(px.max_conns_per_client, r.int32(*s, 0, 1 << 24));
  }
  for (auto [name, prefix, bits] :
       {std::tuple{"client_ipv4_prefix", &px.client_ipv4_prefix, 32},
        std::tuple{"client_ipv6_prefix", &px.client_ipv6_prefix, 128}}) {
    const Setting* s = Reader::member(g, name);
    if (s == nullptr) continue;
    assign(*prefix, r.int32(*s, 0, bits));
    // They say what one client is for max_conns_per_client, and for nothing else.
    if (px.max_conns_per_client == 0) {
      r.warn(*s, "no effect without max_conns_per_client");
    }
  }
  read_proxy_protocol_from(r, g, px);
  if (auto* s = Reader::member(g, "access_log")) assign(px.access_log, r.string(*s, false));
  return px;
}

constexpr const char* kDefaultStatusListen = "127.0.0.1:9145";

bool is_bare_port(std::string_view text) {
  return !text.empty() && text.size() <= 5 &&
         std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The metrics must not reach the network unless asked: no listen, or a bare port, means
// loopback (unlike a proxy's listen, where "*:port" is spelled out).
StatusSettings read_status(Reader& r, const Setting& g) {
  StatusSettings st;
  r.only(g, {"listen", "access"});
  if (auto* s = Reader::member(g, "listen")) {
    if (s->getType() == Setting::TypeString && is_bare_port(s->c_str())) {
      auto parsed = parse_address(std::string("127.0.0.1:") + s->c_str());
      if (auto* why = std::get_if<std::string>(&parsed)) {
        r.error(*s, *why);
      } else {
        st.listen = std::get<Address>(std::move(parsed));
      }
    } else {
      assign(st.listen, r.address(*s));
    }
  } else {
    st.listen = std::get<Address>(parse_address(kDefaultStatusListen));
  }
  if (auto* s = Reader::member(g, "access")) st.access = r.access(*s);
  return st;
}

// Two listen addresses collide when equal, or when one is the wildcard of the other's family
// on the same port (Linux refuses the second bind).
bool collide(const Address& a, const Address& b) {
  if (a.same_endpoint(b)) return true;
  if (a.storage.ss_family != b.storage.ss_family) return false;
  if (a.storage.ss_family == AF_INET) {
    const auto* x = reinterpret_cast<const sockaddr_in*>(&a.storage);
    const auto* y = reinterpret_cast<const sockaddr_in*>(&b.storage);
    return x->sin_port == y->sin_port &&
           (x->sin_addr.s_addr == htonl(INADDR_ANY) || y->sin_addr.s_addr == htonl(INADDR_ANY));
  }
  if (a.storage.ss_family == AF_INET6) {
    const auto* x = reinterpret_cast<const sockaddr_in6*>(&a.storage);
    const auto* y = reinterpret_cast<const sockaddr_in6*>(&b.storage);
    return x->sin6_port == y->sin6_port &&
           (IN6_IS_ADDR_UNSPECIFIED(&x->sin6_addr) || IN6_IS_ADDR_UNSPECIFIED(&y->sin6_addr));
  }
  return false;
}

void check_unique_names(Reader& r, const Setting& list, const char* what) {
  std::map<std::string, const Setting*> seen;
  for (const Setting& e : list) {
    if (e.getType() != Setting::TypeGroup || !e.exists("name")) continue;
    const Setting& name = e["name"];
    if (name.getType() != Setting::TypeString) continue;
    auto [it, fresh] = seen.emplace(name.c_str(), &name);
    if (!fresh) {
      r.error(name, std::string("duplicate ") + what + " name \"" + name.c_str() + "\" (first at " +
                        r.where(*it->second) + ")");
    }
  }
}

void check_listen_addresses(Reader& r, const Setting& root, const Config& cfg) {
  struct Seen {
    Address address;
    const Setting* setting;
  };
  std::vector<Seen> seen;
  auto visit = [&](const Setting& s) {
    auto parsed = parse_address(s.c_str());
    auto* a = std::get_if<Address>(&parsed);
    if (a == nullptr) return;  // already reported
    for (const Seen& other : seen) {
      if (collide(*a, other.address)) {
        r.error(s, "\"" + a->text + "\" is already listened on as \"" + other.address.text +
                       "\" (" + r.where(*other.setting) + ")");
        return;
      }
    }
    seen.push_back({std::move(*a), &s});
  };
  if (root.exists("proxies") && root["proxies"].getType() == Setting::TypeList) {
    for (const Setting& p : root["proxies"]) {
      if (p.getType() != Setting::TypeGroup || !p.exists("listen")) continue;
      const Setting& l = p["listen"];
      if (l.getType() == Setting::TypeString) {
        visit(l);
      } else if (l.getType() == Setting::TypeArray || l.getType() == Setting::TypeList) {
        for (const Setting& e : l) {
          if (e.getType() == Setting::TypeString) visit(e);
        }
      }
    }
  }
  if (!cfg.status || cfg.status->listen.text.empty()) return;
  // Checked as read: the default or a bare port is not an address in the file.
  const Setting& where =
      root["status"].exists("listen") ? root["status"]["listen"] : root["status"];
  for (const Seen& other : seen) {
    if (collide(cfg.status->listen, other.address)) {
      r.error(where, "\"" + cfg.status->listen.text + "\" is already listened on as \"" +
                         other.address.text + "\" (" + r.where(*other.setting) + ")");
      return;
    }
  }
}

void read_root(Reader& r, const Setting& root, Config& cfg) {
  r.only(root, {"worker_processes", "worker_connections", "worker_rlimit_nofile",
                "worker_shutdown_timeout", "worker_cpu_affinity", "user", "pid_file", "log",
                "events", "thread_pool", "upstreams", "proxies", "status"});

  if (auto* s = Reader::member(root, "worker_processes")) {
    if (s->getType() == Setting::TypeString && std::string_view(s->c_str()) == "auto") {
      const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
      cfg.worker_processes = cpus > 0 ? static_cast<int>(cpus) : 1;
      cfg.worker_processes_auto = true;
    } else if (s->getType() == Setting::TypeString) {
      r.error(*s, "\"" + std::string(s->c_str()) + "\" is not \"auto\" or a number of workers");
    } else {
      assign(cfg.worker_processes, r.int32(*s, 1, 1024));
    }
  }
  if (auto* s = Reader::member(root, "worker_connections")) {
    assign(cfg.worker_connections, r.int32(*s, 2, 1 << 20));
  }
  if (auto* s = Reader::member(root, "worker_rlimit_nofile")) {
    if (auto v = r.integer(*s, 1, 1 << 30)) cfg.worker_rlimit_nofile = static_cast<long>(*v);
  }
  if (auto* s = Reader::member(root, "worker_shutdown_timeout")) {
    assign(cfg.worker_shutdown_timeout, r.duration(*s));
  }
  if (auto* s = Reader::member(root, "worker_cpu_affinity")) {
    assign(cfg.worker_cpu_affinity, r.choice<CpuAffinity>(*s, {{"auto", CpuAffinity::automatic},
                                                               {"off", CpuAffinity::off}}));
  }
  if (auto* s = Reader::member(root, "user")) {
    if (auto name = r.string(*s, false)) {
      // On the reload thread: getpwnam()'s one buffer is not for threads.
      const auto found = look_up_user(*name);
      if (const auto* why = std::get_if<std::string>(&found)) {
        r.error(*s, *why);
      } else {
        cfg.user = *name;
      }
    }
  }
  if (auto* s = Reader::member(root, "pid_file")) assign(cfg.pid_file, r.string(*s, false));
  if (auto* s = Reader::member(root, "log")) read_log(r, *s, cfg.log);
  if (auto* s = Reader::member(root, "events")) read_events(r, *s, cfg.events);
  if (auto* s = Reader::member(root, "thread_pool")) read_thread_pool(r, *s, cfg.thread_pool);

  if (auto* s = Reader::member(root, "upstreams")) {
    r.groups(*s, [&](const Setting& e) { cfg.upstreams.push_back(read_upstream(r, e)); });
    if (s->getType() == Setting::TypeList) check_unique_names(r, *s, "upstream");
  }
  if (auto* s = Reader::member(root, "proxies")) {
    r.groups(*s, [&](const Setting& e) { cfg.proxies.push_back(read_proxy(r, e, cfg.upstreams)); });
    if (s->getType() == Setting::TypeList) check_unique_names(r, *s, "proxy");
  }
  if (auto* s = Reader::member(root, "status")) {
    if (r.is_group(*s)) cfg.status = read_status(r, *s);
  }
  // Comparing addresses takes them resolved.
  if (r.resolves()) check_listen_addresses(r, root, cfg);
}

LoadResult load(const Source& src, std::vector<ConfigError> errors,
                HostNames names = HostNames::resolve) {
  LoadResult result;
  result.errors = std::move(errors);
  // What libconfig would misread or choke on is reported instead of parsed.
  if (!check_lexical(src, result.errors)) return result;
  libconfig::Config lc;
  try {
    lc.readString(src.text());
  } catch (const libconfig::ParseException& e) {
    const auto [file, line] = src.origin(e.getLine());
    result.errors.push_back({file, line, "", std::string(e.getError())});
    return result;
  }
  Config cfg;
  try {
    Reader reader(src, result.errors, result.warnings, names);
    read_root(reader, lc.getRoot(), cfg);
  } catch (const libconfig::ConfigException& e) {
    // Every access above checks the type first; this is a bug, not a user error.
    result.errors.push_back({src.main_file(), 0, "", std::string("internal error: ") + e.what()});
  }
  if (result.errors.empty()) result.config = std::move(cfg);
  return result;
}

}  // namespace

LoadResult load_file(const std::string& path, HostNames names) {
  std::vector<ConfigError> errors;
  const Source src = Source::read_file(path, errors);
  if (!errors.empty() && src.text().empty()) {
    LoadResult result;
    result.errors = std::move(errors);
    return result;
  }
  return load(src, std::move(errors), names);
}

namespace {

// `text` with its comments (#, //, /* */) blanked out, line breaks and strings kept: a pid_file
// line inside a block comment is not one.
std::string without_comments(std::string_view text) {
  std::string out(text);
  enum class In : std::uint8_t { code, string, line_comment, block_comment } in = In::code;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const char c = out[i];
    const char next = i + 1 < out.size() ? out[i + 1] : '\0';
    switch (in) {
      case In::code:
        if (c == '"') {
          in = In::string;
        } else if (c == '#' || (c == '/' && next == '/')) {
          in = In::line_comment;
          out[i] = ' ';
        } else if (c == '/' && next == '*') {
          in = In::block_comment;
          out[i] = out[i + 1] = ' ';
          ++i;
        }
        break;
      case In::string:
        if (c == '\\') {
          ++i;  // the escaped character stays
        } else if (c == '"' || c == '\n') {
          in = In::code;
        }
        break;
      case In::line_comment:
        if (c == '\n') {
          in = In::code;
        } else {
          out[i] = ' ';
        }
        break;
      case In::block_comment:
        if (c == '*' && next == '/') {
          in = In::code;
          out[i] = out[i + 1] = ' ';
          ++i;
        } else if (c != '\n') {
          out[i] = ' ';
        }
        break;
    }
  }
  return out;
}

// A line `pid_file = "VALUE";` (":" for "=", the ";" and a trailing comment optional), for a
// file that libconfig cannot parse: the line may still be whole.
std::optional<std::string> pid_file_line(std::string_view whole) {
  const std::string code = without_comments(whole);
  std::string_view text = code;
  const auto skip_blanks = [](std::string_view& s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  };
  constexpr std::string_view kName = "pid_file";
  while (!text.empty()) {
    const std::size_t eol = std::min(text.find('\n'), text.size());
    std::string_view line = text.substr(0, eol);
    text.remove_prefix(std::min(eol + 1, text.size()));
    skip_blanks(line);
    if (line.substr(0, kName.size()) != kName) continue;
    line.remove_prefix(kName.size());
    skip_blanks(line);
    if (line.empty() || (line.front() != '=' && line.front() != ':')) continue;
    line.remove_prefix(1);
    skip_blanks(line);
    if (line.empty() || line.front() != '"') continue;
    const std::size_t close = line.find('"', 1);
    const std::string_view value = line.substr(1, close == std::string_view::npos ? 0 : close - 1);
    if (close == std::string_view::npos || value.empty() ||
        value.find('\\') != std::string_view::npos) {
      continue;
    }
    std::string_view rest = line.substr(close + 1);
    skip_blanks(rest);
    if (!rest.empty() && (rest.front() == ';' || rest.front() == ',')) rest.remove_prefix(1);
    skip_blanks(rest);
    if (rest.empty()) return std::string(value);  // (a trailing comment is blanked out)
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> read_pid_file_setting(const std::string& path) {
  std::vector<ConfigError> errors;
  const Source src = Source::read_file(path, errors);
  if (check_lexical(src, errors)) {
    libconfig::Config lc;
    try {
      lc.readString(src.text());
      std::string value;
      if (lc.getRoot().lookupValue("pid_file", value) && !value.empty()) return value;
      return std::nullopt;  // parsed: the setting is absent or not a string
    } catch (const libconfig::ConfigException&) {
      // Unparsable: the line itself may still be readable.
    }
  }
  return pid_file_line(src.text());
}

LoadResult load_text(std::string_view text, const std::string& name, const std::string& folder) {
  std::vector<ConfigError> errors;
  const Source src = Source::from_text(text, name, folder, errors);
  return load(src, std::move(errors));
}

}  // namespace ferry::conf
