// The schema of a proxy: its listen addresses, the upstream it names (or the "host:port" that
// makes one), its timeouts and buffers, PROXY protocol, access rules and per-client limits.
#include <algorithm>
#include <cctype>
#include <optional>
#include <string>
#include <tuple>

#include "conf/field.h"
#include "conf/schema.h"

namespace ferry::conf {
namespace {

void read_listen(Reader& r, const Setting& s, Proxy& px) {
  r.strings(s, [&](const Setting& e) {
    if (auto a = r.address(e)) px.listen.push_back(std::move(*a));
  });
  if ((s.getType() == Setting::TypeArray || s.getType() == Setting::TypeList) &&
      s.getLength() == 0) {
    r.error(s, "a proxy needs at least one listen address");
  }
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

// `upstream` of a proxy or a route: an upstream's name, or a "host:port" that makes one.
void read_upstream_name(Reader& r, const Setting& s, std::string& upstream,
                        std::optional<Address>& upstream_address) {
  auto name = r.string(s, false);
  if (!name) return;
  if (r.upstreams == nullptr) {  // the schema reads the upstreams before the proxies
    r.error(s, "internal error: the upstreams were not read before this proxy");
    return;
  }
  std::vector<Upstream>& upstreams = *r.upstreams;
  const bool known = std::any_of(upstreams.begin(), upstreams.end(),
                                 [&](const Upstream& u) { return !u.implicit && u.name == *name; });
  if (known) {
    upstream = *name;
  } else if (name->find(':') != std::string::npos) {
    upstream_address = r.address(s, false);
    if (upstream_address) upstream = inline_upstream(r, s, *upstream_address, upstreams);
  } else {
    std::vector<std::string_view> names;
    for (const Upstream& u : upstreams) {
      if (!u.implicit) names.push_back(u.name);
    }
    r.error(s, "no upstream named \"" + *name + "\"" + did_you_mean(*name, names));
  }
}

void read_upstream_reference(Reader& r, const Setting& s, Proxy& px) {
  read_upstream_name(r, s, px.upstream, px.upstream_address);
}

void print_upstream_reference(Writer& w, std::string_view n, const Proxy& p) {
  if (p.upstream.empty()) return;  // routes without a default one
  if (p.upstream_address) {
    // The implicit upstream is not written as a group (the proxy names the address, and a
    // file read back makes the same one): its defaults are said here instead.
    for (const Upstream& u : w.config().upstreams) {
      if (!u.implicit || u.name != p.upstream || u.servers.empty()) continue;
      const Server& s = u.servers[0];
      w.line("# an upstream of that one server: balance = \"" +
             std::string(name_in<Balance>(kBalances, u.balance)) + "\"; resolve_interval = \"" +
             format_duration(u.resolve_interval) +
             "\"; max_fails = " + std::to_string(s.max_fails) + "; fail_timeout = \"" +
             format_duration(s.fail_timeout) + "\"; no health_check");
    }
  }
  w.set_string(n, p.upstream_address ? p.upstream_address->text : p.upstream);
}

// Whose PROXY header is believed (read after accept_proxy_protocol). Absent: every sender the
// access rules admit, as before the list existed (see read_proxy()).
void read_proxy_protocol_from(Reader& r, const Setting& s, Proxy& px) {
  px.accept_proxy_protocol_from = r.access(s, parse_network);
  if ((s.getType() == Setting::TypeArray || s.getType() == Setting::TypeList) &&
      s.getLength() == 0) {
    r.error(s,
            "no sender listed: every PROXY header would be refused (name the balancers, or "
            "\"all\")");
  }
  if (!px.accept_proxy_protocol) r.warn(s, "no effect without accept_proxy_protocol = true");
}

// What one client is for max_conns_per_client (read after it), and for nothing else.
template <auto M, int Bits>
constexpr Field<Proxy> client_prefix(std::string_view name) {
  return {name,
          [](Reader& r, const Setting& s, Proxy& px) {
            assign(px.*M, r.int32(s, 0, Bits));
            if (px.max_conns_per_client == 0) r.warn(s, "no effect without max_conns_per_client");
          },
          [](Writer& w, std::string_view n, const Proxy& px) { w.set(n, px.*M); }};
}

// A server name a route matches: a host name (letters, digits, '-', '_' and dots; lowercased)
// or "*." before one (any name ending in the rest).
bool valid_route_name(std::string_view name) {
  std::string_view host = name.starts_with("*.") ? name.substr(2) : name;
  if (host.empty() || host.size() > 253 || host.front() == '.' || host.back() == '.') return false;
  return std::all_of(host.begin(), host.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
  });
}

void read_route_names(Reader& r, const Setting& s, Route& rt) {
  r.strings(s, [&](const Setting& e) {
    auto name = r.string(e, false);
    if (!name) return;
    std::string lower = *name;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (!valid_route_name(lower)) {
      r.error(e, "\"" + *name +
                     "\" is not a server name: a host name, or \"*.\" and one (\"*.example.com\")");
      return;
    }
    rt.server_names.push_back(std::move(lower));
  });
}

void read_route_alpn(Reader& r, const Setting& s, Route& rt) {
  r.strings(s, [&](const Setting& e) {
    auto name = r.string(e, false);
    if (!name) return;
    if (name->size() > 255) {
      r.error(e, "an ALPN protocol name has at most 255 bytes");
      return;
    }
    rt.alpn.push_back(std::move(*name));
  });
}

constexpr Field<Route> kRoute[] = {
    {"name", [](Reader& r, const Setting& s, Route& rt) { read_name(r, s, rt.name); },
     [](Writer& w, std::string_view n, const Route& rt) { w.set_string(n, rt.name); }},
    {"server_name", read_route_names,
     [](Writer& w, std::string_view n, const Route& rt) {
       if (!rt.server_names.empty()) w.strings(n, rt.server_names);
     }},
    {"alpn", read_route_alpn,
     [](Writer& w, std::string_view n, const Route& rt) {
       if (!rt.alpn.empty()) w.strings(n, rt.alpn);
     }},
    {"upstream",
     [](Reader& r, const Setting& s, Route& rt) {
       read_upstream_name(r, s, rt.upstream, rt.upstream_address);
     },
     [](Writer& w, std::string_view n, const Route& rt) {
       w.set_string(n, rt.upstream_address ? rt.upstream_address->text : rt.upstream);
     },
     "a route needs an upstream: a name, or \"host:port\""},
};

// `routes`: the name defaults to the upstream's text; names are unique in the proxy (they label
// the route's counters), "default" being the proxy's own upstream.
void read_routes(Reader& r, const Setting& s, Proxy& px) {
  r.groups(s, [&](const Setting& e) {
    Route& rt = px.routes.emplace_back();
    read_fields<Route>(r, e, kRoute, rt);
    if (rt.name.empty()) rt.name = rt.upstream_address ? rt.upstream_address->text : rt.upstream;
    const bool taken =
        rt.name == "default" || std::any_of(px.routes.begin(), px.routes.end() - 1,
                                            [&](const Route& o) { return o.name == rt.name; });
    if (taken && !rt.name.empty()) {
      r.error(Reader::member(e, "name") != nullptr ? e["name"] : e,
              "a route named \"" + rt.name +
                  "\" already exists in this proxy (\"default\" is its own upstream): give "
                  "each route a name of its own");
    }
  });
  if (s.getType() == Setting::TypeList && s.getLength() == 0) {
    r.error(s, "routes lists no route (remove it to send every session to the upstream)");
  }
}

constexpr Field<Proxy> kProxy[] = {
    {"name", [](Reader& r, const Setting& s, Proxy& px) { read_name(r, s, px.name); },
     [](Writer& w, std::string_view n, const Proxy& px) { w.set_string(n, px.name); },
     "every proxy needs a name"},
    {"listen", read_listen,
     [](Writer& w, std::string_view n, const Proxy& px) {
       std::vector<std::string> listen;
       for (const auto& a : px.listen) listen.push_back(a.text);
       w.strings(n, listen);
     },
     "a proxy needs at least one listen address"},
    {"upstream", read_upstream_reference, print_upstream_reference},
    {"routes", read_routes,
     [](Writer& w, std::string_view n, const Proxy& px) {
       if (px.routes.empty()) return;
       print_list<Route>(w, n, all_of(px.routes),
                         [&](const Route& rt) { print_fields<Route>(w, kRoute, rt); });
     }},
    {"preread_timeout",
     [](Reader& r, const Setting& s, Proxy& px) {
       assign(px.preread_timeout, r.duration(s, Msec{1}));
     },
     [](Writer& w, std::string_view n, const Proxy& px) {
       if (!px.routes.empty()) w.set_duration(n, px.preread_timeout);
     }},
    bool_field<&Proxy::reuseport>("reuseport"),
    int_field<&Proxy::backlog, 1, 65535>("backlog"),
    bool_field<&Proxy::deferred_accept>("deferred_accept"),
    duration_field<&Proxy::connect_timeout, 1>("connect_timeout"),
    duration_field<&Proxy::idle_timeout>("idle_timeout"),
    bool_field<&Proxy::half_close>("half_close"),
    int_field<&Proxy::next_upstream_tries, 0, 1000>("next_upstream_tries"),
    duration_field<&Proxy::next_upstream_timeout>("next_upstream_timeout"),
    {"buffer_size",
     [](Reader& r, const Setting& s, Proxy& px) {
       assign(px.buffer_size, r.size(s, 1024, std::size_t{64} << 20));
     },
     [](Writer& w, std::string_view n, const Proxy& px) {
       w.set_string(n, format_size(px.buffer_size));
     }},
    bool_field<&Proxy::splice>("splice"),
    bool_field<&Proxy::tcp_nodelay>("tcp_nodelay"),
    bool_field<&Proxy::so_keepalive>("so_keepalive"),
    bool_field<&Proxy::fastopen_connect>("fastopen_connect"),
    choice_field<&Proxy::send_proxy_protocol, kProxyProtocols>("send_proxy_protocol"),
    bool_field<&Proxy::accept_proxy_protocol>("accept_proxy_protocol"),
    {"accept_proxy_protocol_from", read_proxy_protocol_from,
     [](Writer& w, std::string_view n, const Proxy& px) {
       // Absent means "every sender" (an empty list is refused): only a list given is printed.
       if (!px.accept_proxy_protocol_from.empty()) {
         w.rules(n, px.accept_proxy_protocol_from);
       }
     }},
    {"access", [](Reader& r, const Setting& s, Proxy& px) { px.access = r.access(s); },
     [](Writer& w, std::string_view n, const Proxy& px) { w.rules(n, px.access); }},
    int_field<&Proxy::max_conns_per_client, 0, 1 << 24>("max_conns_per_client"),
    client_prefix<&Proxy::client_ipv4_prefix, 32>("client_ipv4_prefix"),
    client_prefix<&Proxy::client_ipv6_prefix, 128>("client_ipv6_prefix"),
    string_field<&Proxy::access_log, false>("access_log"),
    choice_field<&Proxy::reload_sessions, kReloadSessions>("reload_sessions"),
    {"tls", [](Reader& r, const Setting& s, Proxy& px) { read_server_tls(r, s, px.tls); },
     [](Writer& w, std::string_view n, const Proxy& px) { print_server_tls(w, n, px.tls); }},
};

}  // namespace

Proxy read_proxy(Reader& r, const Setting& g) {
  Proxy px;
  // Read last, as ferry always has (the table is in the order `ferry -T` prints): messages on
  // one line keep their order, and the first of them stays a failed reload's reason.
  constexpr std::string_view kLater[] = {"accept_proxy_protocol_from", "access_log"};
  const std::span<const Field<Proxy>> fields(kProxy);
  read_fields<Proxy>(r, g, fields, px, kLater);
  read_field(r, g, field_named(fields, kLater[0]), px);
  // Without the list every sender is believed, as before the list existed: kept so that an
  // upgrade does not refuse a working balancer, but warned, since anyone who can connect may
  // then claim any address (nginx believes no one without set_real_ip_from).
  if (px.accept_proxy_protocol && Reader::member(g, "accept_proxy_protocol_from") == nullptr) {
    r.warn(g["accept_proxy_protocol"],
           "every sender is believed: any client that can connect may claim any address in its "
           "PROXY header; list the balancers in accept_proxy_protocol_from (\"all\" to believe "
           "every sender)");
  }
  read_field(r, g, field_named(fields, kLater[1]), px);
  if (Reader::member(g, "upstream") == nullptr && Reader::member(g, "routes") == nullptr) {
    r.missing(g, "upstream", "name an upstream, or give one \"host:port\"");
  }
  if (!px.routes.empty() && r.upstreams != nullptr) {
    // Passthrough TLS wrapped in the upstream's own TLS: a client's handshake inside ferry's.
    const auto originates = [&](const std::string& name) {
      return std::any_of(r.upstreams->begin(), r.upstreams->end(),
                         [&](const Upstream& u) { return u.name == name && u.tls; });
    };
    for (std::size_t i = 0; i < px.routes.size(); ++i) {
      if (originates(px.routes[i].upstream)) {
        r.error(g["routes"][static_cast<int>(i)]["upstream"],
                "upstream \"" + px.routes[i].upstream +
                    "\" makes TLS to its servers, and a route passes the client's TLS through: "
                    "route to an upstream without tls");
      }
    }
    if (!px.upstream.empty() && originates(px.upstream)) {
      r.error(g["upstream"], "upstream \"" + px.upstream +
                                 "\" makes TLS to its servers, and the default route passes the "
                                 "client's TLS through: use an upstream without tls");
    }
  }
  if (px.tls && !px.routes.empty()) {
    r.error(g["routes"],
            "routes pass TLS through by its ClientHello and tls terminates it: a proxy does one "
            "or the other (route to a terminating proxy's address to do both)");
  }
  if (px.routes.empty() && Reader::member(g, "preread_timeout") != nullptr) {
    r.warn(g["preread_timeout"], "no effect without routes");
  }
  return px;
}

void print_proxy(Writer& w, const Proxy& p) { print_fields<Proxy>(w, kProxy, p); }

}  // namespace ferry::conf
