// The table `ferry -s status` prints: the master, each proxy, each route of a routing proxy,
// each upstream server and each worker, columns padded to their widest cell.
#include <iterator>
#include <vector>

#include <fmt/format.h>

#include "worker/stats/render.h"
#include "worker/stats/render_text.h"

namespace ferry::worker {
namespace {

using render_text::append_text;
using render_text::each_server;
using render_text::number;

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

}  // namespace

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

  if (!s.routes.empty()) {
    out += '\n';
    Table routes({"PROXY", "ROUTE", "SESSIONS", "ACTIVE"}, "--nn");
    for (const auto& g : s.routes) {
      for (const auto& r : g.servers) {
        routes.row({printable(g.name), printable(r.address), number(r.sessions), number(r.active)});
      }
    }
    routes.render(out);
  }

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

}  // namespace ferry::worker
