// Renderings of a stats Snapshot: JSON, Prometheus text, a table; with the escaping each needs.
#include "worker/stats/render.h"

#include <algorithm>
#include <initializer_list>
#include <iterator>
#include <string_view>
#include <utility>

#include <fmt/format.h>

namespace ferry::worker {
namespace {

constexpr std::string_view kReplacement = "\xef\xbf\xbd";  // U+FFFD

// The length of the well-formed UTF-8 sequence at the start of `s` (RFC 3629: no overlong
// forms, no surrogates, nothing past U+10FFFF), or 0.
std::size_t utf8_length(std::string_view s) noexcept {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char b = byte(0);
  std::size_t n = 0;
  unsigned char lo = 0x80;
  unsigned char hi = 0xbf;
  if (b < 0x80) return 1;
  if (b >= 0xc2 && b <= 0xdf) {
    n = 2;
  } else if (b >= 0xe0 && b <= 0xef) {
    n = 3;
    if (b == 0xe0) lo = 0xa0;
    if (b == 0xed) hi = 0x9f;
  } else if (b >= 0xf0 && b <= 0xf4) {
    n = 4;
    if (b == 0xf0) lo = 0x90;
    if (b == 0xf4) hi = 0x8f;
  } else {
    return 0;
  }
  if (s.size() < n || byte(1) < lo || byte(1) > hi) return 0;
  for (std::size_t i = 2; i < n; ++i) {
    if (byte(i) < 0x80 || byte(i) > 0xbf) return 0;
  }
  return n;
}

// Appends `text` to `out` as UTF-8: ASCII through `ascii` (which escapes what it must), other
// characters as they are, bytes that are not UTF-8 as U+FFFD.
template <typename Ascii>
void append_text(std::string& out, std::string_view text, Ascii&& ascii) {
  while (!text.empty()) {
    const std::size_t n = utf8_length(text);
    if (n == 1) {
      ascii(out, text[0]);
    } else if (n == 0) {
      out += kReplacement;
    } else {
      out.append(text.data(), n);
    }
    text.remove_prefix(std::max<std::size_t>(n, 1));
  }
}

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

template <typename Each>
void each_server(const Snapshot& s, Each&& each) {
  for (const auto& u : s.upstreams) {
    for (const auto& v : u.servers) each(u, v);
  }
}

// ---- the table -------------------------------------------------------------------------------

// A name for a terminal: control characters as C escapes, so that no name breaks a row.
std::string printable(std::string_view text) {
  std::string out;
  append_text(out, text, [](std::string& o, char c) {
    switch (c) {
      case '\n': o += "\\n"; break;
      case '\t': o += "\\t"; break;
      case '\r': o += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          fmt::format_to(std::back_inserter(o), "\\x{:02x}", static_cast<unsigned>(c));
        } else {
          o += c;
        }
    }
  });
  return out;
}

// Characters on screen, near enough: UTF-8 continuation bytes take no column.
std::size_t columns(std::string_view text) {
  return static_cast<std::size_t>(std::count_if(text.begin(), text.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0xc0) != 0x80;
  }));
}

std::string duration(std::int64_t seconds) {
  if (seconds < 0) seconds = 0;
  const std::int64_t d = seconds / 86400, h = seconds / 3600 % 24, m = seconds / 60 % 60,
                     sec = seconds % 60;
  if (d > 0) return fmt::format("{}d {}h", d, h);
  if (h > 0) return fmt::format("{}h {}m", h, m);
  if (m > 0) return fmt::format("{}m {}s", m, sec);
  return fmt::format("{}s", sec);
}

// Columns padded to their widest cell: text left, numbers right.
class Table {
 public:
  Table(std::initializer_list<std::string_view> headers, std::string_view numeric)
      : numeric_(numeric) {
    rows_.emplace_back(headers.begin(), headers.end());
  }
  void row(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }
  void render(std::string& out) const {
    std::vector<std::size_t> widths(rows_.front().size(), 0);
    for (const auto& r : rows_) {
      for (std::size_t c = 0; c < r.size(); ++c) widths[c] = std::max(widths[c], columns(r[c]));
    }
    for (const auto& r : rows_) {
      std::string line;
      for (std::size_t c = 0; c < r.size(); ++c) {
        const std::string pad(widths[c] - columns(r[c]), ' ');
        const bool right = c < numeric_.size() && numeric_[c] == 'n';
        if (c > 0) line += "  ";
        line += right ? pad + r[c] : r[c] + (c + 1 < r.size() ? pad : "");
      }
      out += line + '\n';
    }
  }

 private:
  std::string_view numeric_;  // 'n' for each column of numbers
  std::vector<std::vector<std::string>> rows_;
};

template <typename T>
std::string number(T v) {
  return fmt::format("{}", v);
}

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

std::string render_table(const Snapshot& s) {
  std::string out =
      fmt::format("ferry {}, master pid {}, up {}, generation {}\n", printable(s.version), s.pid,
                  duration(s.now - s.started), s.generation);
  out += fmt::format("reloads: {} ok, {} failed", s.reloads_ok, s.reloads_failed);
  if (s.last_reload != ReloadResult::none) {
    out += fmt::format("; the last {} {} ago", to_string(s.last_reload),
                       duration(s.now - s.last_reload_at));
  }
  out += '\n';
  if (!s.last_reload_error.empty()) {
    out += "last reload error: " + printable(s.last_reload_error) + '\n';
  }

  out += '\n';
  Table proxies({"PROXY", "ACCEPTED", "HANDLED", "ACTIVE", "DENIED", "LIMITED", "NO CONNECTION",
                 "FROM CLIENTS", "TO CLIENTS"},
                "-nnnnnnnn");
  for (const auto& p : s.proxies) {
    proxies.row({printable(p.name) + (p.configured ? "" : " (removed)"), number(p.accepted),
                 number(p.handled), number(p.active), number(p.denied), number(p.limited),
                 number(p.no_connections), number(p.bytes_from_clients),
                 number(p.bytes_to_clients)});
  }
  proxies.render(out);

  out += '\n';
  Table servers({"UPSTREAM", "SERVER", "STATE", "ADMIN", "WEIGHT", "SESSIONS", "ACTIVE", "FAILED",
                 "SENT", "RECEIVED", "HEALTH CHECK"},
                "----nnnnnn-");
  each_server(s, [&](const Snapshot::Upstream& u, const Snapshot::Server& v) {
    const std::string health =
        v.health == CheckResult::none
            ? "-"
            : fmt::format("{} {} ago", to_string(v.health), duration(s.now - v.health_at));
    const std::string weight = v.effective_weight == v.weight
                                   ? number(static_cast<std::uint64_t>(v.weight))
                                   : fmt::format("{}/{}", v.effective_weight, v.weight);
    servers.row({printable(u.name), printable(v.address), std::string(to_string(v.state)),
                 std::string(to_string(v.admin)), weight, number(v.sessions), number(v.active),
                 number(v.connect_failures), number(v.bytes_sent), number(v.bytes_received),
                 health});
  });
  servers.render(out);

  out += '\n';
  Table workers({"WORKER PID", "GENERATION", "UP", "CONNECTIONS"}, "nn-n");
  for (const auto& w : s.workers) {
    workers.row(
        {number(w.pid), number(w.generation), duration(s.now - w.started), number(w.connections)});
  }
  workers.render(out);
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
