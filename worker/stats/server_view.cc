// annotate_servers() and `show servers`'s table and JSON.
#include "worker/stats/server_view.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <fmt/format.h>

namespace ferry::worker {
namespace {

const AdminRecord* record_of(const std::vector<AdminRecord>& records, std::string_view upstream,
                             std::string_view server) {
  for (const AdminRecord& r : records) {
    if (r.upstream == upstream && r.server == server) return &r;
  }
  return nullptr;
}

const conf::Server* configured(const conf::Config& cfg, std::string_view upstream,
                               std::string_view server) {
  for (const conf::Upstream& u : cfg.upstreams) {
    if (u.name != upstream) continue;
    for (const conf::Server& s : u.servers) {
      if (s.name() == server) return &s;
    }
  }
  return nullptr;
}

template <typename Each>
void each_shown(const Snapshot& s, std::string_view upstream, Each&& each) {
  for (const auto& u : s.upstreams) {
    if (!upstream.empty() && u.name != upstream) continue;
    for (const auto& v : u.servers) each(u, v);
  }
}

}  // namespace

std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      out += fmt::format("\\u{:04x}", c);
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

std::int64_t steady_ms() noexcept {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int slow_start_percent(std::int64_t since_ms, std::int64_t period_ms, std::int64_t now_ms) {
  if (period_ms <= 0 || since_ms <= 0 || now_ms - since_ms >= period_ms) return -1;
  return static_cast<int>(std::max<std::int64_t>(0, now_ms - since_ms) * 100 / period_ms);
}

void annotate_servers(Snapshot& s, const conf::Config& cfg, const std::vector<AdminRecord>& records,
                      std::int64_t now_ms) {
  for (const AdminRecord& r : records) {
    if (!r.added) continue;
    auto u = std::find_if(s.upstreams.begin(), s.upstreams.end(),
                          [&](const Snapshot::Upstream& x) { return x.name == r.upstream; });
    if (u == s.upstreams.end()) {
      s.upstreams.push_back({r.upstream, {}});
      u = std::prev(s.upstreams.end());
    }
    const bool known =
        std::any_of(u->servers.begin(), u->servers.end(),
                    [&](const Snapshot::Server& v) { return v.address == r.server; });
    if (!known) {
      Snapshot::Server v;
      v.address = r.server;
      v.state = r.backup ? ServerState::backup : ServerState::up;
      u->servers.push_back(std::move(v));
    }
  }
  for (auto& u : s.upstreams) {
    for (auto& v : u.servers) {
      const AdminRecord* r = record_of(records, u.name, v.address);
      const conf::Server* c = configured(cfg, u.name, v.address);
      v.added = r != nullptr && r->added;
      v.admin = r != nullptr ? r->state : AdminState::ready;
      v.weight = r != nullptr && r->weight > 0 ? r->weight : c != nullptr ? c->weight : 1;
      std::int64_t period = v.added ? r->slow_start_ms : 0;
      if (c != nullptr) {
        for (const conf::Upstream& cu : cfg.upstreams) {
          if (cu.name == u.name) period = c->slow_start.value_or(cu.slow_start).count();
        }
      } else if (v.added && period == 0) {
        for (const conf::Upstream& cu : cfg.upstreams) {
          if (cu.name == u.name) period = cu.slow_start.count();
        }
      }
      v.slow_start_percent =
          r != nullptr ? slow_start_percent(r->ready_since_ms, period, now_ms) : -1;
      const bool serving = v.admin == AdminState::ready && v.state != ServerState::down &&
                           v.state != ServerState::failed && v.state != ServerState::removed;
      v.effective_weight = !serving ? 0
                           : v.slow_start_percent < 0
                               ? v.weight
                               : std::max(1, (v.weight * v.slow_start_percent + 99) / 100);
    }
  }
}

std::string render_servers_text(const Snapshot& s, std::string_view upstream) {
  std::vector<std::vector<std::string>> rows;
  rows.push_back(
      {"UPSTREAM", "SERVER", "HEALTH", "ADMIN", "WEIGHT", "EFFECTIVE", "ACTIVE", "SLOW START"});
  each_shown(s, upstream, [&](const Snapshot::Upstream& u, const Snapshot::Server& v) {
    rows.push_back({u.name, v.address + (v.added ? " (added)" : ""),
                    std::string(to_string(v.state)), std::string(to_string(v.admin)),
                    std::to_string(v.weight), std::to_string(v.effective_weight),
                    std::to_string(v.active),
                    v.slow_start_percent < 0 ? "-" : fmt::format("{}%", v.slow_start_percent)});
  });
  std::vector<std::size_t> widths(rows.front().size(), 0);
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    out += line + "\n";
  }
  return out;
}

std::string render_servers_json(const Snapshot& s, std::string_view upstream) {
  std::string out = "[";
  bool first = true;
  each_shown(s, upstream, [&](const Snapshot::Upstream& u, const Snapshot::Server& v) {
    out += first ? "\n  " : ",\n  ";
    first = false;
    out += fmt::format(
        "{{\"upstream\": {}, \"server\": {}, \"health\": {}, \"admin\": {}, \"weight\": {}, "
        "\"effective_weight\": {}, \"active\": {}, \"slow_start_percent\": {}, \"added\": {}}}",
        json_string(u.name), json_string(v.address), json_string(to_string(v.state)),
        json_string(to_string(v.admin)), v.weight, v.effective_weight, v.active,
        v.slow_start_percent < 0 ? std::string("null") : std::to_string(v.slow_start_percent),
        v.added ? "true" : "false");
  });
  out += first ? "]\n" : "\n]\n";
  return out;
}

}  // namespace ferry::worker
