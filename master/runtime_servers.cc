// RuntimeServers: the commands' effect on the master's records, the precedence rules at a
// reload, and the state file's lines.
#include "master/runtime_servers.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include <fmt/format.h>

#include "conf/values.h"
#include "event/syscall_util.h"

namespace ferry::master {
namespace {

using worker::AdminState;

constexpr int kMaxWeight = 1000;  // as the configuration's `weight`

const conf::Upstream* upstream_of(const conf::Config& cfg, std::string_view name) {
  for (const conf::Upstream& u : cfg.upstreams) {
    if (u.name == name) return &u;
  }
  return nullptr;
}

std::vector<std::string_view> words_of(std::string_view line) {
  std::vector<std::string_view> words;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    const std::size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) words.push_back(line.substr(start, i - start));
  }
  return words;
}

template <typename T>
bool number(std::string_view text, T& out) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

}  // namespace

std::optional<ServerName> parse_server_name(std::string_view text) {
  const std::size_t slash = text.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 == text.size()) return {};
  return ServerName{std::string(text.substr(0, slash)), std::string(text.substr(slash + 1))};
}

const conf::Server* RuntimeServers::configured(const conf::Config& cfg, const ServerName& n) {
  const conf::Upstream* u = upstream_of(cfg, n.upstream);
  if (u == nullptr) return nullptr;
  for (const conf::Server& s : u->servers) {
    if (s.name() == n.server) return &s;
  }
  return nullptr;
}

RuntimeServer* RuntimeServers::find_mutable(const ServerName& n) noexcept {
  for (RuntimeServer& r : servers_) {
    if (r.upstream == n.upstream && r.server == n.server) return &r;
  }
  return nullptr;
}

const RuntimeServer* RuntimeServers::find(const ServerName& n) const noexcept {
  return const_cast<RuntimeServers*>(this)->find_mutable(n);
}

std::optional<std::string> RuntimeServers::does_not_fit(const ServerName& n) const {
  if (n.server.size() >= worker::ServerAdminTable::kNameBytes ||
      n.upstream.size() >= worker::ServerAdminTable::kNameBytes) {
    return fmt::format("the name is too long for the runtime table (at most {} bytes each)",
                       worker::ServerAdminTable::kNameBytes - 1);
  }
  if (servers_.size() >= worker::ServerAdminTable::kEntries) {
    return fmt::format("the runtime table is full ({} servers changed at run time)",
                       worker::ServerAdminTable::kEntries);
  }
  return {};
}

RuntimeServer* RuntimeServers::existing(const conf::Config& cfg, const ServerName& n,
                                        std::string& why) {
  if (upstream_of(cfg, n.upstream) == nullptr) {
    why = fmt::format("no upstream named \"{}\"", n.upstream);
    return nullptr;
  }
  if (RuntimeServer* r = find_mutable(n)) return r;
  if (configured(cfg, n) == nullptr) {
    why = fmt::format("upstream \"{}\" has no server \"{}\"", n.upstream, n.server);
    return nullptr;
  }
  if (const auto too = does_not_fit(n)) {
    why = *too;
    return nullptr;
  }
  RuntimeServer& r = servers_.emplace_back();
  r.upstream = n.upstream;
  r.server = n.server;
  return &r;
}

std::optional<std::string> RuntimeServers::set_state(const conf::Config& cfg, const ServerName& n,
                                                     AdminState state, bool kill,
                                                     std::int64_t now_ms) {
  if (kill && state != AdminState::maint) return "--kill goes with maint only";
  if (state == AdminState::removed) return "use `del server` to remove a server";
  std::string why;
  RuntimeServer* r = existing(cfg, n, why);
  if (r == nullptr) return why;
  if (state == AdminState::ready && r->state != AdminState::ready) r->ready_since_ms = now_ms;
  r->state = state;
  if (kill) r->kill_epoch = ++kills_;
  prune(cfg, now_ms);
  return {};
}

std::optional<std::string> RuntimeServers::set_weight(const conf::Config& cfg, const ServerName& n,
                                                      int weight, std::int64_t now_ms) {
  if (weight < 1 || weight > kMaxWeight) {
    return fmt::format("weight {} is out of range (1 to {})", weight, kMaxWeight);
  }
  std::string why;
  RuntimeServer* r = existing(cfg, n, why);
  if (r == nullptr) return why;
  if (r->state == AdminState::removed) return "the server is removed";
  r->weight = weight;
  if (const conf::Server* s = configured(cfg, n); s != nullptr && !r->added) {
    r->config_weight = s->weight;
  }
  prune(cfg, now_ms);
  return {};
}

std::optional<std::string> RuntimeServers::add(const conf::Config& cfg, const ServerName& n,
                                               int weight, bool backup, std::int64_t slow_start_ms,
                                               std::int64_t now_ms) {
  if (upstream_of(cfg, n.upstream) == nullptr) {
    return fmt::format("no upstream named \"{}\"", n.upstream);
  }
  auto parsed = conf::parse_address(n.server, false);
  if (const auto* why = std::get_if<std::string>(&parsed)) return *why;
  // A host name is resolved by the workers (as a configured one is), and it is the name TLS
  // origination verifies.
  if (std::get<conf::Address>(parsed).length == 0 && !conf::is_host_name(n.server)) {
    return fmt::format("\"{}\" is neither an IP address nor a host name with a port", n.server);
  }
  if (weight < 1 || weight > kMaxWeight) {
    return fmt::format("weight {} is out of range (1 to {})", weight, kMaxWeight);
  }
  if (const auto too = does_not_fit(n)) return too;
  if (configured(cfg, n) != nullptr) {
    return fmt::format("upstream \"{}\" already has server \"{}\" in the configuration{}",
                       n.upstream, n.server,
                       find(n) != nullptr && find(n)->state == AdminState::removed
                           ? " (removed: `set server ... state ready` brings it back)"
                           : "");
  }
  if (find(n) != nullptr) {
    return fmt::format("upstream \"{}\" already has server \"{}\"", n.upstream, n.server);
  }
  RuntimeServer& r = servers_.emplace_back();
  r.upstream = n.upstream;
  r.server = n.server;
  r.added = true;
  r.weight = weight;
  r.backup = backup;
  r.slow_start_ms = slow_start_ms;
  r.ready_since_ms = now_ms;
  return {};
}

std::optional<std::string> RuntimeServers::remove(const conf::Config& cfg, const ServerName& n) {
  std::string why;
  RuntimeServer* r = existing(cfg, n, why);
  if (r == nullptr) return why;
  if (r->added) {
    // Gone from the table: the workers take a server they no longer find as removed.
    std::erase_if(servers_, [&](const RuntimeServer& s) { return &s == r; });
    return {};
  }
  r->state = AdminState::removed;
  return {};
}

std::optional<std::string> RuntimeServers::kill(const conf::Config& cfg, const ServerName& n) {
  std::string why;
  RuntimeServer* r = existing(cfg, n, why);
  if (r == nullptr) return why;
  r->kill_epoch = ++kills_;
  return {};
}

void RuntimeServers::prune(const conf::Config& cfg, std::int64_t now_ms) {
  std::erase_if(servers_, [&](const RuntimeServer& r) {
    if (r.added || r.state != AdminState::ready || r.weight != 0 || r.kill_epoch != 0) {
      return false;
    }
    if (r.ready_since_ms == 0) return true;
    // Back to ready: the record carries when, for the workers' slow start, until it is over.
    std::int64_t ramp = 0;
    const conf::Upstream* u = upstream_of(cfg, r.upstream);
    if (const conf::Server* s = configured(cfg, {r.upstream, r.server}); s != nullptr) {
      ramp = s->slow_start.value_or(u->slow_start).count();
    }
    return ramp == 0 || (now_ms > 0 && now_ms - r.ready_since_ms >= ramp);
  });
}

std::vector<std::string> RuntimeServers::reconcile(const conf::Config& cfg, std::int64_t now_ms) {
  std::vector<std::string> notes;
  std::erase_if(servers_, [&](RuntimeServer& r) {
    const std::string name = r.upstream + "/" + r.server;
    if (upstream_of(cfg, r.upstream) == nullptr) {
      notes.push_back(
          fmt::format("{}: its upstream is no longer configured; runtime changes "
                      "dropped",
                      name));
      return true;
    }
    const conf::Server* s = configured(cfg, {r.upstream, r.server});
    if (r.added) {
      if (s == nullptr) return false;
      notes.push_back(
          fmt::format("{}: the configuration has it now; the configuration's "
                      "settings apply",
                      name));
      return true;
    }
    if (s == nullptr) {
      notes.push_back(fmt::format("{}: no longer configured; runtime changes dropped", name));
      return true;
    }
    if (r.weight != 0 && s->weight != r.config_weight) {
      notes.push_back(
          fmt::format("{}: the configuration's weight {} (edited since) wins over the "
                      "runtime weight {}",
                      name, s->weight, r.weight));
      r.weight = 0;
    }
    return false;
  });
  prune(cfg, now_ms);
  return notes;
}

std::vector<worker::AdminRecord> RuntimeServers::records() const {
  std::vector<worker::AdminRecord> out;
  out.reserve(servers_.size());
  for (const RuntimeServer& r : servers_) {
    worker::AdminRecord a;
    a.upstream = r.upstream;
    a.server = r.server;
    a.state = r.state;
    a.weight = r.weight;
    a.added = r.added;
    a.backup = r.backup;
    a.slow_start_ms = r.slow_start_ms;
    a.ready_since_ms = r.ready_since_ms;
    a.kill_epoch = r.kill_epoch;
    out.push_back(std::move(a));
  }
  return out;
}

std::string RuntimeServers::serialize() const {
  std::string text =
      "# ferry: runtime changes of upstream servers, written by ferry (see ferry.conf(5),\n"
      "# state_file). Read at start; the configuration's rules of precedence apply.\n";
  for (const RuntimeServer& r : servers_) {
    if (r.added) {
      text +=
          fmt::format("added {} {} state={} weight={} backup={} slow_start_ms={}\n", r.upstream,
                      r.server, to_string(r.state), r.weight, r.backup ? 1 : 0, r.slow_start_ms);
    } else {
      text += fmt::format("server {} {} state={} weight={} config_weight={}\n", r.upstream,
                          r.server, to_string(r.state), r.weight, r.config_weight);
    }
  }
  return text;
}

void RuntimeServers::parse(std::string_view text, std::vector<std::string>& errors) {
  std::size_t line_no = 0;
  while (!text.empty()) {
    const std::size_t eol = text.find('\n');
    const std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view() : text.substr(eol + 1);
    ++line_no;
    const auto words = words_of(line);
    if (words.empty() || words[0].starts_with('#')) continue;
    const auto bad = [&](std::string_view why) {
      errors.push_back(fmt::format("{}: {}", line_no, why));
    };
    if ((words[0] != "server" && words[0] != "added") || words.size() < 3) {
      bad("expected \"server\" or \"added\", an upstream and a server");
      continue;
    }
    RuntimeServer r;
    r.added = words[0] == "added";
    r.upstream = words[1];
    r.server = words[2];
    bool ok = true;
    for (std::size_t i = 3; i < words.size() && ok; ++i) {
      const std::size_t eq = words[i].find('=');
      const std::string_view key = words[i].substr(0, eq);
      const std::string_view value =
          eq == std::string_view::npos ? std::string_view() : words[i].substr(eq + 1);
      int flag = 0;
      if (key == "state") {
        const auto st = worker::admin_state_from(value);
        ok = st.has_value();
        if (ok) r.state = *st;
      } else if (key == "weight") {
        ok = number(value, r.weight) && r.weight >= 0 && r.weight <= kMaxWeight;
      } else if (key == "config_weight") {
        ok = number(value, r.config_weight);
      } else if (key == "backup") {
        ok = number(value, flag) && (flag == 0 || flag == 1);
        r.backup = flag == 1;
      } else if (key == "slow_start_ms") {
        ok = number(value, r.slow_start_ms) && r.slow_start_ms >= 0;
      } else {
        ok = false;
      }
      if (!ok) bad(fmt::format("cannot read \"{}\"", words[i]));
    }
    if (!ok) continue;
    if (r.added && (r.weight < 1 ||
                    std::holds_alternative<std::string>(conf::parse_address(r.server, false)))) {
      bad("an added server needs an address or host name and a weight of at least 1");
      continue;
    }
    if (find({r.upstream, r.server}) != nullptr) {
      bad("the server is named twice; the first line counts");
      continue;
    }
    if (const auto too = does_not_fit({r.upstream, r.server})) {
      bad(*too);
      continue;
    }
    servers_.push_back(std::move(r));
  }
}

std::optional<std::string> write_file_atomically(const std::string& path, std::string_view text) {
  const std::size_t slash = path.rfind('/');
  const std::string folder = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  std::string temp = path + ".XXXXXX";
  event::UniqueFd fd(::mkostemp(temp.data(), O_CLOEXEC));
  if (!fd) return fmt::format("cannot create {}: {}", temp, event::last_error().message());
  const auto fail = [&](const char* what) {
    std::string why = fmt::format("{} {} failed: {}", what, temp, event::last_error().message());
    (void)::unlink(temp.c_str());
    return why;
  };
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = event::retry_eintr(
        [&] { return ::write(fd.get(), text.data() + done, text.size() - done); });
    if (n <= 0) return fail("write to");
    done += static_cast<std::size_t>(n);
  }
  if (::fchmod(fd.get(), 0644) == -1) return fail("fchmod of");
  if (::fsync(fd.get()) == -1) return fail("fsync of");
  fd.reset();
  if (::rename(temp.c_str(), path.c_str()) == -1) return fail("rename of");
  event::UniqueFd dir(::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir) (void)::fsync(dir.get());  // the rename lasts a crash; a failure here loses nothing now
  return {};
}

}  // namespace ferry::master
