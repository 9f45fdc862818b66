// to_text(): one setting per line, nested groups indented, strings escaped for libconfig.
#include "conf/printer.h"

#include <cstdio>

#include "conf/values.h"

namespace ferry::conf {
namespace {

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (const unsigned char ch : s) {
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\f': out += "\\f"; break;
      default:
        if (ch < 0x20 || ch >= 0x7f) {
          char hex[5];
          std::snprintf(hex, sizeof hex, "\\x%02x", ch);
          out += hex;
        } else {
          out += static_cast<char>(ch);
        }
    }
  }
  return out + '"';
}

const char* name_of(LogLevel v) {
  switch (v) {
    case LogLevel::trace: return "trace";
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warn: return "warn";
    case LogLevel::error: return "error";
    case LogLevel::critical: return "critical";
  }
  return "info";
}
const char* name_of(Balance v) {
  switch (v) {
    case Balance::round_robin: return "round_robin";
    case Balance::least_conn: return "least_conn";
    case Balance::hash: return "hash";
  }
  return "round_robin";
}
const char* name_of(ProxyProtocol v) {
  switch (v) {
    case ProxyProtocol::off: return "off";
    case ProxyProtocol::v1: return "v1";
    case ProxyProtocol::v2: return "v2";
  }
  return "off";
}

class Writer {
 public:
  void line(const std::string& text) { out_ += std::string(indent_ * 2, ' ') + text + '\n'; }
  void set(const std::string& name, const std::string& value) { line(name + " = " + value + ";"); }
  void set(const std::string& name, int value) { set(name, std::to_string(value)); }
  void set(const std::string& name, bool value) {
    set(name, std::string(value ? "true" : "false"));
  }
  void set_string(const std::string& name, const std::string& v) { set(name, quote(v)); }
  void set_duration(const std::string& name, Msec v) { set(name, quote(format_duration(v))); }
  void open(const std::string& text) {
    line(text);
    ++indent_;
  }
  void close(const std::string& text) {
    --indent_;
    line(text);
  }
  void strings(const std::string& name, const std::vector<std::string>& values) {
    std::string list;
    for (const auto& v : values) list += (list.empty() ? "" : ", ") + quote(v);
    set(name, "[ " + list + (list.empty() ? "]" : " ]"));
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
  int indent_ = 0;
};

std::vector<std::string> rule_texts(const std::vector<AccessRule>& rules) {
  std::vector<std::string> out;
  for (const auto& r : rules) out.push_back(r.text);
  return out;
}

}  // namespace

std::string to_text(const Config& cfg) {
  Writer w;
  w.line("# ferry: effective configuration (defaults filled in)");
  if (cfg.worker_processes_auto) {
    w.set_string("worker_processes", "auto");
  } else {
    w.set("worker_processes", cfg.worker_processes);
  }
  w.set("worker_connections", cfg.worker_connections);
  if (cfg.worker_rlimit_nofile) {
    w.set("worker_rlimit_nofile", std::to_string(*cfg.worker_rlimit_nofile));
  }
  w.set_duration("worker_shutdown_timeout", cfg.worker_shutdown_timeout);
  w.set_string("worker_cpu_affinity",
               cfg.worker_cpu_affinity == CpuAffinity::automatic ? "auto" : "off");
  if (cfg.user) w.set_string("user", *cfg.user);
  w.set_string("pid_file", cfg.pid_file);

  w.open("log = {");
  w.set_string("level", name_of(cfg.log.level));
  w.set_string("path", cfg.log.path);
  w.close("};");

  w.open("events = {");
  w.set("accept_mutex", cfg.events.accept_mutex);
  w.set_duration("accept_mutex_delay", cfg.events.accept_mutex_delay);
  w.set("multi_accept", cfg.events.multi_accept);
  w.set("epoll_events", cfg.events.epoll_events);
  w.set("io_uring", cfg.events.io_uring);
  w.set("io_uring_min_events", cfg.events.io_uring_min_events);
  w.close("};");

  w.open("thread_pool = {");
  w.set("threads", cfg.thread_pool.threads);
  w.set("max_queue", cfg.thread_pool.max_queue);
  w.close("};");

  w.open("upstreams = (");
  std::vector<const Upstream*> written;  // the implicit ones are the proxies' `upstream`
  for (const Upstream& u : cfg.upstreams) {
    if (!u.implicit) written.push_back(&u);
  }
  for (std::size_t i = 0; i < written.size(); ++i) {
    const Upstream& u = *written[i];
    w.open("{");
    w.set_string("name", u.name);
    w.set_string("balance", name_of(u.balance));
    w.set_duration("resolve_interval", u.resolve_interval);
    w.set("resolve_required", u.resolve_required);
    w.open("servers = (");
    for (std::size_t k = 0; k < u.servers.size(); ++k) {
      const Server& s = u.servers[k];
      w.open("{");
      w.set_string("address", s.address.text);
      w.set("weight", s.weight);
      w.set("max_fails", s.max_fails);
      w.set_duration("fail_timeout", s.fail_timeout);
      w.set("max_conns", s.max_conns);
      w.set("backup", s.backup);
      w.set("down", s.down);
      w.close(k + 1 < u.servers.size() ? "}," : "}");
    }
    w.close(");");
    if (u.health_check) {
      const HealthCheck& h = *u.health_check;
      w.open("health_check = {");
      w.set_duration("interval", h.interval);
      w.set_duration("timeout", h.timeout);
      w.set("fails", h.fails);
      w.set("passes", h.passes);
      w.set_string("send", h.send);
      w.set_string("expect", h.expect);
      w.close("};");
    }
    w.close(i + 1 < written.size() ? "}," : "}");
  }
  w.close(");");

  w.open("proxies = (");
  for (std::size_t i = 0; i < cfg.proxies.size(); ++i) {
    const Proxy& p = cfg.proxies[i];
    w.open("{");
    w.set_string("name", p.name);
    std::vector<std::string> listen;
    for (const auto& a : p.listen) listen.push_back(a.text);
    w.strings("listen", listen);
    if (p.upstream_address) {
      // The implicit upstream is not written as a group (the proxy names the address, and a
      // file read back makes the same one): its defaults are said here instead.
      for (const Upstream& u : cfg.upstreams) {
        if (!u.implicit || u.name != p.upstream || u.servers.empty()) continue;
        const Server& s = u.servers[0];
        w.line("# an upstream of that one server: balance = \"" + std::string(name_of(u.balance)) +
               "\"; resolve_interval = \"" + format_duration(u.resolve_interval) +
               "\"; max_fails = " + std::to_string(s.max_fails) + "; fail_timeout = \"" +
               format_duration(s.fail_timeout) + "\"; no health_check");
      }
    }
    w.set_string("upstream", p.upstream_address ? p.upstream_address->text : p.upstream);
    w.set("reuseport", p.reuseport);
    w.set("backlog", p.backlog);
    w.set_duration("connect_timeout", p.connect_timeout);
    w.set_duration("idle_timeout", p.idle_timeout);
    w.set("next_upstream_tries", p.next_upstream_tries);
    w.set_duration("next_upstream_timeout", p.next_upstream_timeout);
    w.set_string("buffer_size", format_size(p.buffer_size));
    w.set("splice", p.splice);
    w.set("tcp_nodelay", p.tcp_nodelay);
    w.set("so_keepalive", p.so_keepalive);
    w.set_string("send_proxy_protocol", name_of(p.send_proxy_protocol));
    w.set("accept_proxy_protocol", p.accept_proxy_protocol);
    // Absent means "every sender" (an empty list is refused): only a list given is printed.
    if (!p.accept_proxy_protocol_from.empty()) {
      w.strings("accept_proxy_protocol_from", rule_texts(p.accept_proxy_protocol_from));
    }
    w.strings("access", rule_texts(p.access));
    w.set("max_conns_per_client", p.max_conns_per_client);
    w.set("client_ipv4_prefix", p.client_ipv4_prefix);
    w.set("client_ipv6_prefix", p.client_ipv6_prefix);
    w.set_string("access_log", p.access_log);
    w.close(i + 1 < cfg.proxies.size() ? "}," : "}");
  }
  w.close(");");

  if (cfg.status) {
    w.open("status = {");
    w.set_string("listen", cfg.status->listen.text);
    w.strings("access", rule_texts(cfg.status->access));
    w.close("};");
  }
  return w.take();
}

}  // namespace ferry::conf
