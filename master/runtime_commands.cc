// The operator's commands on upstream servers, on the control socket (`ferry ctl`, or socat):
// parsing a command line, who may run it, publishing the change to the workers and answering
// once they all applied it, `show servers`, and the state file.
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "conf/user.h"
#include "conf/values.h"
#include "master/control_protocol.h"
#include "master/master.h"
#include "worker/stats/server_view.h"

namespace ferry::master {
namespace {

using worker::steady_ms;

std::vector<std::string_view> split(std::string_view line) {
  std::vector<std::string_view> words;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
    const std::size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t' && line[i] != '\r') ++i;
    if (i > start) words.push_back(line.substr(start, i - start));
  }
  return words;
}

void send_all(int fd, std::string_view text) {
  std::size_t sent = 0;
  while (sent < text.size()) {
    const ssize_t w =
        ::send(fd, text.data() + sent, text.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w <= 0) {
      spdlog::warn("control answer cut short: {}",
                   w == -1 ? event::last_error().message() : std::string("closed"));
      return;
    }
    sent += static_cast<std::size_t>(w);
  }
}

constexpr std::string_view kUsage =
    "commands: show servers [UPSTREAM] [--json] | set server UPSTREAM/SERVER state "
    "ready|drain|maint [--kill] | set server UPSTREAM/SERVER weight N | add server "
    "UPSTREAM/ADDRESS|UPSTREAM/HOST:PORT [weight N] [backup] [slow_start DURATION] | del server "
    "UPSTREAM/SERVER | "
    "kill sessions UPSTREAM/SERVER | show sessions [proxy NAME] [server UPSTREAM/SERVER] "
    "[client ADDRESS] [--json] | kill session ID | kill sessions client ADDRESS";

// A parsed write command, applied to RuntimeServers.
struct Parsed {
  std::string error;  // why the line is not a command (nothing is done)
  bool write = false;
  bool show = false;
  std::string show_upstream;
  bool json = false;
};

}  // namespace

Master::PeerAccess Master::peer_access(int fd) const {
  PeerAccess a;
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1) {
    a.why = fmt::format("getsockopt(SO_PEERCRED) failed: {}", event::last_error().message());
    return a;
  }
  a.uid = cred.uid;
  a.pid = cred.pid;
  if (cred.uid == 0 || cred.uid == ::geteuid()) {
    a.access = Access::write;
    return a;
  }
  // The names are looked up once per configuration, not per request: a slow name service
  // (LDAP) must not stall the master's loop on every command.
  if (peer_uids_for_ != config_.get()) {
    peer_uids_for_ = config_.get();
    const auto uid_of = [](const std::string& name) -> std::optional<uid_t> {
      const auto found = conf::look_up_user(name);
      if (const auto* ids = std::get_if<conf::UserIds>(&found)) return ids->uid;
      return std::nullopt;
    };
    writer_uid_ = config_->user ? uid_of(*config_->user) : std::nullopt;
    reader_uids_.clear();
    for (const std::string& reader : config_->control_readers) {
      if (const auto uid = uid_of(reader)) reader_uids_.push_back(*uid);
    }
  }
  if (writer_uid_ == cred.uid) {
    a.access = Access::write;
    return a;
  }
  for (const uid_t reader : reader_uids_) {
    if (reader != cred.uid) continue;
    a.access = Access::read;
    a.why = fmt::format(
        "uid {} (pid {}) may only read (control_readers); changes are for root, "
        "uid {}{}",
        cred.uid, cred.pid, ::geteuid(),
        config_->user ? " and user " + *config_->user : std::string());
    return a;
  }
  a.why = fmt::format("uid {} (pid {}) may not control this master (root and uid {} may)", cred.uid,
                      cred.pid, ::geteuid());
  return a;
}

void Master::run_command(Connection& c, std::string_view line) {
  const auto words = split(line);
  const auto answer_error = [&](const std::string& why) {
    send_all(c.fd.get(), protocol::error_answer("ferry: " + why + "\n"));
    loop_.close_connection(c);
  };
  if (words.empty()) return answer_error("empty command; " + std::string(kUsage));
  const std::string_view verb = words[0];
  const bool show = verb == "show";
  const bool write = verb == "set" || verb == "add" || verb == "del" || verb == "kill";
  if (!show && !write && verb != "help") {
    return answer_error(fmt::format("unknown command \"{}\"; {}", verb, kUsage));
  }
  const PeerAccess peer = peer_access(c.fd.get());
  if (peer.access == Access::none || (write && peer.access != Access::write)) {
    spdlog::warn("control socket: refused \"{}\": {}", line, peer.why);
    return answer_error("refused: " + peer.why);
  }
  if (verb == "help") {
    const std::string body = std::string(kUsage) + "\n";
    send_all(c.fd.get(), "ok " + std::to_string(body.size()) + "\n" + body);
    loop_.close_connection(c);
    return;
  }
  if (show) {
    bool json = false;
    std::string upstream;
    if (words.size() >= 2 && words[1] == "sessions") {
      return run_sessions_command(c, words, peer, line);
    }
    if (words.size() < 2 || words[1] != "servers") {
      return answer_error(
          "show what? (show servers [UPSTREAM] [--json] | show sessions [proxy NAME] [server "
          "UPSTREAM/SERVER] [client ADDRESS] [--json])");
    }
    for (std::size_t i = 2; i < words.size(); ++i) {
      if (words[i] == "--json") {
        json = true;
      } else if (upstream.empty() && !words[i].starts_with("-")) {
        upstream = words[i];
      } else {
        return answer_error(fmt::format("show servers: unexpected \"{}\"", words[i]));
      }
    }
    if (!upstream.empty() &&
        std::none_of(config_->upstreams.begin(), config_->upstreams.end(),
                     [&](const conf::Upstream& u) { return u.name == upstream; })) {
      return answer_error(fmt::format("no upstream named \"{}\"", upstream));
    }
    const std::string body = show_servers(upstream, json);
    send_all(c.fd.get(), "ok " + std::to_string(body.size()) + "\n" + body);
    loop_.close_connection(c);
    return;
  }
  if (verb == "kill" && words.size() >= 2 &&
      (words[1] == "session" ||
       (words[1] == "sessions" && words.size() >= 3 && words[2] == "client"))) {
    return run_sessions_command(c, words, peer, line);
  }
  // set | add | del | kill: the object and its name.
  const std::string_view object = verb == "kill" ? "sessions" : "server";
  if (words.size() < 3 || words[1] != object) {
    return answer_error(fmt::format("{} what? ({})", verb, kUsage));
  }
  const auto name = parse_server_name(words[2]);
  if (!name) return answer_error(fmt::format("\"{}\" is not UPSTREAM/SERVER", words[2]));
  const std::int64_t now = steady_ms();
  const RuntimeServers before = runtime_;  // put back if the workers cannot be told
  std::optional<std::string> refused;
  const auto extra = [&](std::size_t from) {
    return fmt::format("unexpected \"{}\"", words[from]);
  };
  if (verb == "set") {
    if (words.size() < 5) return answer_error("set server NAME state STATE | weight N");
    if (words[3] == "state") {
      const auto state = worker::admin_state_from(words[4]);
      if (!state || *state == worker::AdminState::removed) {
        return answer_error(fmt::format("\"{}\" is not a state (ready, drain or maint)", words[4]));
      }
      bool kill = false;
      for (std::size_t i = 5; i < words.size(); ++i) {
        if (words[i] != "--kill") return answer_error(extra(i));
        kill = true;
      }
      refused = runtime_.set_state(*config_, *name, *state, kill, now);
    } else if (words[3] == "weight") {
      int weight = 0;
      const auto [end, ec] =
          std::from_chars(words[4].data(), words[4].data() + words[4].size(), weight);
      if (ec != std::errc() || end != words[4].data() + words[4].size()) {
        return answer_error(fmt::format("\"{}\" is not a weight", words[4]));
      }
      if (words.size() > 5) return answer_error(extra(5));
      refused = runtime_.set_weight(*config_, *name, weight, now);
    } else {
      return answer_error(fmt::format("set server: \"{}\" is neither state nor weight", words[3]));
    }
  } else if (verb == "add") {
    int weight = 1;
    bool backup = false;
    std::int64_t slow_start = 0;
    for (std::size_t i = 3; i < words.size(); ++i) {
      if (words[i] == "backup") {
        backup = true;
      } else if (words[i] == "weight" && i + 1 < words.size()) {
        const std::string_view w = words[++i];
        const auto [end, ec] = std::from_chars(w.data(), w.data() + w.size(), weight);
        if (ec != std::errc() || end != w.data() + w.size()) {
          return answer_error(fmt::format("\"{}\" is not a weight", w));
        }
      } else if (words[i] == "slow_start" && i + 1 < words.size()) {
        auto d = conf::parse_duration(words[++i]);
        if (const auto* why = std::get_if<std::string>(&d)) return answer_error(*why);
        slow_start = std::get<conf::Msec>(d).count();
      } else {
        return answer_error(extra(i));
      }
    }
    refused = runtime_.add(*config_, *name, weight, backup, slow_start, now);
  } else if (verb == "del") {
    if (words.size() > 3) return answer_error(extra(3));
    refused = runtime_.remove(*config_, *name);
  } else {  // kill sessions
    if (words.size() > 3) return answer_error(extra(3));
    refused = runtime_.kill(*config_, *name);
  }
  spdlog::info("control: uid {} (pid {}): {}{}", peer.uid, peer.pid, line,
               refused ? " — refused: " + *refused : std::string());
  if (refused) return answer_error(*refused);
  const auto published = std::chrono::steady_clock::now();  // the workers' time counts from here
  std::string not_saved;
  if (!publish_runtime(true, &not_saved)) {
    runtime_ = before;
    return answer_error("the change does not fit the workers' table; nothing changed");
  }
  // Answered once every live worker has applied it (or at kAdminApplyWait).
  c.read.handler = on_waiting_client_read;
  // A change the state file could not keep is in force, but would not outlive a restart: said.
  admin_waiters_.push_back(
      {&c, admin_version_, published,
       not_saved.empty() ? std::string() : "warning: not kept in state_file: " + not_saved + "\n"});
  if (!admin_wait_timer_.timer_set) arm(admin_wait_timer_, kAdminApplyWait, on_admin_wait_timer);
  on_admin_applied();
}

// Writes the table for the workers, tells every live one, and keeps the state file (why it
// could not goes to `save_error`). False (logged) when the records do not fit the table: nothing
// was published.
bool Master::publish_runtime(bool save, std::string* save_error) {
  if (zones_.admin == nullptr) return true;
  if (!zones_.admin->publish(runtime_.records())) {
    spdlog::error("the runtime server settings do not fit the shared table; not published");
    return false;
  }
  admin_version_ = zones_.admin->version();
  for (auto& w : workers_) {
    if (w.pid > 0 && w.channel.fd) tell(w, worker::Command::admin);
  }
  if (!save || config_->state_file.empty()) return true;
  if (const auto why = write_file_atomically(config_->state_file, runtime_.serialize())) {
    spdlog::error("state_file: {}", *why);
    if (save_error != nullptr) *save_error = *why;
  }
  return true;
}

void Master::load_runtime_state() {
  if (config_->state_file.empty()) return;
  std::ifstream in(config_->state_file);
  if (!in) {
    if (errno != ENOENT) {
      spdlog::warn("state_file {}: cannot read it: {}; starting from the configuration",
                   config_->state_file, event::last_error().message());
    }
    return;
  }
  std::stringstream text;
  text << in.rdbuf();
  std::vector<std::string> errors;
  runtime_.parse(text.str(), errors);
  for (const std::string& e : errors) {
    spdlog::warn("state_file {}:{}; line skipped", config_->state_file, e);
  }
  spdlog::info("state_file {}: {} runtime server change(s) read", config_->state_file,
               runtime_.servers().size());
}

// A configuration about to serve: the runtime changes that still apply to it.
void Master::reconcile_runtime() {
  peer_uids_for_ = nullptr;  // `user` and control_readers are looked up again
  // A reload: kept until its generation serves, for restore_serving() if it never does.
  if (previous_) runtime_before_reload_ = runtime_;
  const std::string before = runtime_.serialize();
  for (const std::string& note : runtime_.reconcile(*config_, steady_ms())) {
    spdlog::info("runtime: {}", note);
  }
  (void)publish_runtime(runtime_.serialize() != before);
}

void Master::on_admin_applied() { answer_admin_waiters(false); }

void Master::on_admin_wait_timer(Event& ev) {
  auto& m = *static_cast<Master*>(ev.data);
  m.answer_admin_waiters(true);
}

// Answers the waiters whose change every live worker applied (`all`: every waiter past its
// wait, with the workers that had not applied it yet).
void Master::answer_admin_waiters(bool all) {
  const auto now = std::chrono::steady_clock::now();
  std::erase_if(admin_waiters_, [&](AdminWaiter& wt) {
    std::size_t applied = 0;
    std::size_t live = 0;
    for (const auto& w : workers_) {
      if (w.pid <= 0 || w.counters == nullptr || !w.channel.fd) continue;
      ++live;
      if (w.counters->admin_version.load(std::memory_order_acquire) >= wt.version) ++applied;
    }
    const bool late = now - wt.since >= kAdminApplyWait;
    if (applied < live && !(all && late)) return false;
    const auto ms = std::chrono::duration<double, std::milli>(now - wt.since).count();
    const std::string line =
        applied == live
            ? fmt::format("applied by {} worker(s) in {:.3f} ms\n", applied, ms)
            : fmt::format(
                  "applied by {} of {} worker(s) within {:.0f} ms; the others will when "
                  "they read their channel\n",
                  applied, live, ms);
    send_all(wt.client->fd.get(), std::string(protocol::kOk) + wt.answer + line);
    loop_.close_connection(*wt.client);
    return true;
  });
  if (!admin_waiters_.empty()) arm(admin_wait_timer_, Msec{50}, on_admin_wait_timer);
}

std::string Master::show_servers(std::string_view upstream, bool json) const {
  worker::Snapshot snapshot;
  if (stats_ != nullptr) snapshot = stats_->snapshot();
  worker::annotate_servers(snapshot, *config_, runtime_.records(), steady_ms());
  return json ? worker::render_servers_json(snapshot, upstream)
              : worker::render_servers_text(snapshot, upstream);
}

}  // namespace ferry::master
