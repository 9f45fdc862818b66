// Renderings of a stats Snapshot for the status endpoint: JSON and Prometheus text, with the
// escaping each needs (the table of `ferry -s status` is render_table.cc's), and their cache.
#include "worker/stats/render.h"

#include <algorithm>
#include <initializer_list>
#include <iterator>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include "worker/stats/render_text.h"

namespace ferry::worker {
namespace {

using render_text::append_text;
using render_text::each_server;
using render_text::number;

// ---- JSON ------------------------------------------------------------------------------------

void append_json_string(std::string& out, std::string_view text) {
  out += '"';
  append_text(out, text, [](std::string& o, char c) {
    switch (c) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\b': o += "\\b"; break;
      case '\f': o += "\\f"; break;
      case '\n': o += "\\n"; break;
      case '\r': o += "\\r"; break;
      case '\t': o += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          fmt::format_to(std::back_inserter(o), "\\u{:04x}", static_cast<unsigned>(c));
        } else {
          o += c;
        }
    }
  });
  out += '"';
}

// A JSON object or array being written: commas between members, keys escaped.
class JsonWriter {
 public:
  explicit JsonWriter(std::string& out) : out_(out) {}

  void open(char bracket) {
    out_ += bracket;
    first_ = true;
  }
  void close(char bracket) {
    out_ += bracket;
    first_ = false;
  }
  // The next member's key (inside an object) or its separator (inside an array).
  JsonWriter& key(std::string_view k) {
    element();
    append_json_string(out_, k);
    out_ += ':';
    first_ = true;  // the value follows without a comma
    return *this;
  }
  JsonWriter& element() {
    if (!first_) out_ += ',';
    first_ = false;
    return *this;
  }
  void value(std::uint64_t v) { put(fmt::format("{}", v)); }
  void value(std::int64_t v) { put(fmt::format("{}", v)); }
  void value(int v) { put(fmt::format("{}", v)); }
  void string(std::string_view v) {
    first_ = false;
    append_json_string(out_, v);
  }
  void null() { put("null"); }
  // Opening a nested object or array right after a key.
  void begin(char bracket) {
    first_ = false;
    open(bracket);
  }

 private:
  void put(std::string_view v) {
    first_ = false;
    out_ += v;
  }

  std::string& out_;
  bool first_ = true;
};

// ---- Prometheus ------------------------------------------------------------------------------

void append_label_value(std::string& out, std::string_view text) {
  append_text(out, text, [](std::string& o, char c) {
    switch (c) {
      case '\\': o += "\\\\"; break;
      case '"': o += "\\\""; break;
      case '\n': o += "\\n"; break;
      default: o += c;
    }
  });
}

using Labels = std::initializer_list<std::pair<std::string_view, std::string_view>>;

class PromWriter {
 public:
  explicit PromWriter(std::string& out) : out_(out) {}

  // Starts a family: its HELP and TYPE lines, once.
  void family(std::string_view name, std::string_view type, std::string_view help) {
    fmt::format_to(std::back_inserter(out_), "# HELP {} {}\n# TYPE {} {}\n", name, help, name,
                   type);
  }
  void sample(std::string_view name, Labels labels, std::uint64_t value) {
    out_ += name;
    if (labels.size() > 0) {
      char sep = '{';
      for (const auto& [k, v] : labels) {
        out_ += sep;
        out_ += k;
        out_ += "=\"";
        append_label_value(out_, v);
        out_ += '"';
        sep = ',';
      }
      out_ += '}';
    }
    fmt::format_to(std::back_inserter(out_), " {}\n", value);
  }

 private:
  std::string& out_;
};

// A counter of each proxy (Row: Snapshot::Proxy) or server: its JSON key, its metric family.
template <typename Row>
struct Metric {
  std::string_view key;
  std::string_view name;
  std::string_view type;
  std::string_view help;
  std::uint64_t Row::*value;
};
constexpr Metric<Snapshot::Proxy> kProxyMetrics[] = {
    {"accepted", "ferry_proxy_accepted_total", "counter",
     "Client connections accepted, refused ones included.", &Snapshot::Proxy::accepted},
    {"handled", "ferry_proxy_handled_total", "counter", "Client connections closed, whichever way.",
     &Snapshot::Proxy::handled},
    {"active", "ferry_proxy_active_sessions", "gauge", "Sessions open now.",
     &Snapshot::Proxy::active},
    {"denied", "ferry_proxy_denied_total", "counter",
     "Client connections refused by the access rules or as PROXY senders not in "
     "accept_proxy_protocol_from.",
     &Snapshot::Proxy::denied},
    {"limited", "ferry_proxy_limited_total", "counter",
     "Client connections refused by max_conns_per_client.", &Snapshot::Proxy::limited},
    {"no_connections", "ferry_proxy_no_connections_total", "counter",
     "Client connections refused because worker_connections was full.",
     &Snapshot::Proxy::no_connections},
    {"bytes_from_clients", "ferry_proxy_received_bytes_total", "counter",
     "Bytes received from clients.", &Snapshot::Proxy::bytes_from_clients},
    {"bytes_to_clients", "ferry_proxy_sent_bytes_total", "counter", "Bytes sent to clients.",
     &Snapshot::Proxy::bytes_to_clients},
};

constexpr Metric<Snapshot::Server> kServerMetrics[] = {
    {"sessions", "ferry_upstream_server_sessions_total", "counter",
     "Sessions connected to the server.", &Snapshot::Server::sessions},
    {"active", "ferry_upstream_server_active_sessions", "gauge",
     "Sessions connected to the server now.", &Snapshot::Server::active},
    {"connect_failures", "ferry_upstream_server_connect_failures_total", "counter",
     "Connections to the server that failed.", &Snapshot::Server::connect_failures},
    {"bytes_sent", "ferry_upstream_server_sent_bytes_total", "counter", "Bytes sent to the server.",
     &Snapshot::Server::bytes_sent},
    {"bytes_received", "ferry_upstream_server_received_bytes_total", "counter",
     "Bytes received from the server.", &Snapshot::Server::bytes_received},
};

constexpr ServerState kStates[] = {ServerState::up,      ServerState::down,
                                   ServerState::backup,  ServerState::draining,
                                   ServerState::removed, ServerState::failed};

}  // namespace

std::string render_json(const Snapshot& s) {
  std::string out;
  JsonWriter j(out);
  j.open('{');
  j.key("version").string(s.version);
  j.key("pid").value(static_cast<std::int64_t>(s.pid));
  j.key("started").value(s.started);
  j.key("uptime_seconds").value(std::max<std::int64_t>(0, s.now - s.started));
  j.key("generation").value(s.generation);

  j.key("reloads").begin('{');
  j.key("ok").value(s.reloads_ok);
  j.key("failed").value(s.reloads_failed);
  j.key("last").string(to_string(s.last_reload));
  j.key("last_at");
  s.last_reload == ReloadResult::none ? j.null() : j.value(s.last_reload_at);
  j.key("last_error").string(s.last_reload_error);
  j.close('}');

  j.key("workers").begin('[');
  for (const auto& w : s.workers) {
    j.element().begin('{');
    j.key("pid").value(static_cast<std::int64_t>(w.pid));
    j.key("generation").value(w.generation);
    j.key("started").value(w.started);
    j.key("connections").value(w.connections);
    j.close('}');
  }
  j.close(']');

  j.key("proxies").begin('{');
  for (const auto& p : s.proxies) {
    j.key(p.name).begin('{');
    for (const auto& m : kProxyMetrics) j.key(m.key).value(p.*m.value);
    j.close('}');
  }
  j.close('}');

  j.key("upstreams").begin('{');
  for (const auto& u : s.upstreams) {
    j.key(u.name).begin('{');
    j.key("servers").begin('[');
    for (const auto& v : u.servers) {
      j.element().begin('{');
      j.key("address").string(v.address);
      j.key("state").string(to_string(v.state));
      j.key("admin").string(to_string(v.admin));
      j.key("weight").value(static_cast<std::int64_t>(v.weight));
      j.key("effective_weight").value(static_cast<std::int64_t>(v.effective_weight));
      j.key("slow_start_percent");
      v.slow_start_percent < 0 ? j.null()
                               : j.value(static_cast<std::int64_t>(v.slow_start_percent));
      for (const auto& m : kServerMetrics) j.key(m.key).value(v.*m.value);
      j.key("health").begin('{');
      j.key("last").string(to_string(v.health));
      j.key("at");
      v.health == CheckResult::none ? j.null() : j.value(v.health_at);
      j.close('}');
      j.close('}');
    }
    j.close(']');
    j.close('}');
  }
  j.close('}');
  // A routing proxy's routes: sessions routed each way, and open now.
  j.key("routes").begin('{');
  for (const auto& g : s.routes) {
    j.key(g.name).begin('{');
    for (const auto& r : g.servers) {
      j.key(r.address).begin('{');
      j.key("sessions").value(r.sessions);
      j.key("active").value(r.active);
      j.close('}');
    }
    j.close('}');
  }
  j.close('}');
  j.close('}');
  out += '\n';
  return out;
}

std::string render_prometheus(const Snapshot& s) {
  std::string out;
  PromWriter p(out);
  p.family("ferry_build_info", "gauge", "Always 1; the version of ferry running.");
  p.sample("ferry_build_info", {{"version", s.version}}, 1);
  p.family("ferry_uptime_seconds", "gauge", "Seconds since the master process started.");
  p.sample("ferry_uptime_seconds", {},
           static_cast<std::uint64_t>(std::max<std::int64_t>(0, s.now - s.started)));
  p.family("ferry_generation", "gauge", "The newest generation of workers.");
  p.sample("ferry_generation", {}, static_cast<std::uint64_t>(std::max(0, s.generation)));
  p.family("ferry_reloads_total", "counter", "Configuration reloads, by result.");
  p.sample("ferry_reloads_total", {{"result", "ok"}}, s.reloads_ok);
  p.sample("ferry_reloads_total", {{"result", "failed"}}, s.reloads_failed);
  p.family("ferry_last_reload_successful", "gauge",
           "0 when the last reload failed, else 1 (also before any reload).");
  p.sample("ferry_last_reload_successful", {}, s.last_reload == ReloadResult::failed ? 0 : 1);

  if (!s.workers.empty()) {
    std::vector<std::pair<std::string, std::string>> ids;
    for (const auto& w : s.workers) ids.emplace_back(number(w.pid), number(w.generation));
    p.family("ferry_worker_connections", "gauge",
             "Connections a worker has in use, client and server sides.");
    for (std::size_t i = 0; i < ids.size(); ++i) {
      p.sample("ferry_worker_connections",
               {{"worker", ids[i].first}, {"generation", ids[i].second}}, s.workers[i].connections);
    }
    p.family("ferry_worker_start_time_seconds", "gauge",
             "When a worker started, in seconds since the Unix epoch.");
    for (std::size_t i = 0; i < ids.size(); ++i) {
      p.sample("ferry_worker_start_time_seconds",
               {{"worker", ids[i].first}, {"generation", ids[i].second}},
               static_cast<std::uint64_t>(std::max<std::int64_t>(0, s.workers[i].started)));
    }
  }

  if (!s.proxies.empty()) {
    for (const auto& m : kProxyMetrics) {
      p.family(m.name, m.type, m.help);
      for (const auto& x : s.proxies) p.sample(m.name, {{"proxy", x.name}}, x.*m.value);
    }
  }

  if (!s.routes.empty()) {
    p.family("ferry_route_sessions_total", "counter",
             "Sessions a routing proxy sent by a route (its ClientHello's server name and ALPN).");
    for (const auto& g : s.routes) {
      for (const auto& r : g.servers) {
        p.sample("ferry_route_sessions_total", {{"proxy", g.name}, {"route", r.address}},
                 r.sessions);
      }
    }
    p.family("ferry_route_active_sessions", "gauge", "Routed sessions open now, by route.");
    for (const auto& g : s.routes) {
      for (const auto& r : g.servers) {
        p.sample("ferry_route_active_sessions", {{"proxy", g.name}, {"route", r.address}},
                 r.active);
      }
    }
  }

  if (!s.upstreams.empty()) {
    for (const auto& m : kServerMetrics) {
      p.family(m.name, m.type, m.help);
      each_server(s, [&](const Snapshot::Upstream& u, const Snapshot::Server& v) {
        p.sample(m.name, {{"upstream", u.name}, {"server", v.address}}, v.*m.value);
      });
    }
    p.family("ferry_upstream_server_up", "gauge",
             "1 when the server takes sessions (up, or a backup), else 0.");
    each_server(s, [&](const Snapshot::Upstream& u, const Snapshot::Server& v) {
      const bool up = v.state == ServerState::up || v.state == ServerState::backup;
      p.sample("ferry_upstream_server_up", {{"upstream", u.name}, {"server", v.address}},
               up ? 1 : 0);
    });
    p.family("ferry_upstream_server_state", "gauge",
             "1 for the server's state (up, down, backup, draining, removed, failed), 0 for the "
             "others.");
    each_server(s, [&](const Snapshot::Upstream& u, const Snapshot::Server& v) {
      for (ServerState st : kStates) {
        p.sample("ferry_upstream_server_state",
                 {{"upstream", u.name}, {"server", v.address}, {"state", to_string(st)}},
                 v.state == st ? 1 : 0);
      }
    });
    p.family("ferry_upstream_server_admin_state", "gauge",
             "1 for the operator's state of the server (ready, drain, maint, removed), 0 for the "
             "others.");
    each_server(s, [&](const Snapshot::Upstream& u, const Snapshot::Server& v) {
      for (AdminState st :
           {AdminState::ready, AdminState::drain, AdminState::maint, AdminState::removed}) {
        p.sample("ferry_upstream_server_admin_state",
                 {{"upstream", u.name}, {"server", v.address}, {"state", to_string(st)}},
                 v.admin == st ? 1 : 0);
      }
    });
    p.family("ferry_upstream_server_weight", "gauge",
             "The server's weight: configured, or set at run time.");
    each_server(s, [&](const Snapshot::Upstream& u, const Snapshot::Server& v) {
      p.sample("ferry_upstream_server_weight", {{"upstream", u.name}, {"server", v.address}},
               static_cast<std::uint64_t>(v.weight));
    });
    p.family("ferry_upstream_server_effective_weight", "gauge",
             "The weight new sessions see now: 0 when the server takes none, lower during its slow "
             "start.");
    each_server(s, [&](const Snapshot::Upstream& u, const Snapshot::Server& v) {
      p.sample("ferry_upstream_server_effective_weight",
               {{"upstream", u.name}, {"server", v.address}},
               static_cast<std::uint64_t>(v.effective_weight));
    });
    p.family("ferry_upstream_server_slow_start_percent", "gauge",
             "How far the server's slow start is, in percent (100 when none is under way).");
    each_server(s, [&](const Snapshot::Upstream& u, const Snapshot::Server& v) {
      p.sample("ferry_upstream_server_slow_start_percent",
               {{"upstream", u.name}, {"server", v.address}},
               static_cast<std::uint64_t>(v.slow_start_percent < 0 ? 100 : v.slow_start_percent));
    });
    bool checked = false;
    each_server(s, [&](const Snapshot::Upstream&, const Snapshot::Server& v) {
      checked = checked || v.health != CheckResult::none;
    });
    if (checked) {
      p.family("ferry_upstream_server_health_check_ok", "gauge",
               "1 when the last active health check of the server passed, 0 when it failed.");
      each_server(s, [&](const Snapshot::Upstream& u, const Snapshot::Server& v) {
        if (v.health == CheckResult::none) return;
        p.sample("ferry_upstream_server_health_check_ok",
                 {{"upstream", u.name}, {"server", v.address}},
                 v.health == CheckResult::ok ? 1 : 0);
      });
      p.family("ferry_upstream_server_health_check_timestamp_seconds", "gauge",
               "When the last active health check of the server ran, in seconds since the Unix "
               "epoch.");
      each_server(s, [&](const Snapshot::Upstream& u, const Snapshot::Server& v) {
        if (v.health == CheckResult::none) return;
        p.sample("ferry_upstream_server_health_check_timestamp_seconds",
                 {{"upstream", u.name}, {"server", v.address}},
                 static_cast<std::uint64_t>(std::max<std::int64_t>(0, v.health_at)));
      });
    }
  }
  return out;
}

const std::string& RenderCache::get(Render render, Snapshot snapshot) {
  Entry* e = nullptr;
  for (Entry& x : entries_) {
    if (x.render == render) e = &x;
  }
  if (e == nullptr) {
    e = &entries_[next_];
    next_ = (next_ + 1) % std::size(entries_);
  } else if (e->snapshot == snapshot) {
    return e->body;
  }
  e->render = render;
  e->body = render(snapshot);
  e->snapshot = std::move(snapshot);
  return e->body;
}

}  // namespace ferry::worker
