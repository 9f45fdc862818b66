// `ferry ctl show sessions` and `kill session ID` / `kill sessions client ADDRESS`: the master
// asks every live worker through a memfd passed on its channel, collects the answers (one
// request in flight, later ones queued, each bounded by kSessionsWait) and answers the asker.
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <span>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "event/fd_passing.h"
#include "master/control_protocol.h"
#include "master/master.h"
#include "worker/stats/server_view.h"

namespace ferry::master {
namespace {

// A worker's answer is its own text: whatever it holds, the master reads no more than this.
constexpr std::size_t kMaxAnswer = 64u << 20;
// Requests waiting behind the one in flight: past this the asker is told to come back (a `ferry
// ctl` gives up after 10 s; each request takes at most kSessionsWait).
constexpr std::size_t kMaxQueuedQueries = 8;

constexpr std::string_view kShowUsage =
    "show sessions [proxy NAME] [server UPSTREAM/SERVER] [client ADDRESS] [--json]";

// The memfd's whole text, at most kMaxAnswer bytes; nothing (logged) when it cannot be read.
std::optional<std::string> read_memfd(int fd, pid_t pid) {
  struct stat st {};
  if (::fstat(fd, &st) == -1) {
    spdlog::error("fstat() of worker pid {}'s sessions answer failed: {}", pid,
                  event::last_error().message());
    return std::nullopt;
  }
  const auto size = static_cast<std::size_t>(std::max<off_t>(st.st_size, 0));
  if (size > kMaxAnswer) {
    spdlog::warn("worker pid {}'s sessions answer is {} bytes: only the first {} are read", pid,
                 size, kMaxAnswer);
  }
  std::string text(std::min(size, kMaxAnswer), '\0');
  std::size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = event::retry_eintr(
        [&] { return ::pread(fd, text.data() + got, text.size() - got, static_cast<off_t>(got)); });
    if (n < 0) {
      spdlog::error("pread() of worker pid {}'s sessions answer failed: {}", pid,
                    event::last_error().message());
      return std::nullopt;
    }
    if (n == 0) break;  // it shrank (the worker is still writing): read again at its report
    got += static_cast<std::size_t>(n);
  }
  text.resize(got);
  return text;
}

std::string render_text(const std::vector<std::pair<pid_t, worker::ListedSession>>& rows) {
  std::vector<std::vector<std::string>> table;
  table.push_back({"ID", "PROXY", "CLIENT", "SERVER", "SERVER ADDRESS", "WORKER", "PHASE", "AGE",
                   "FROM CLIENT", "TO CLIENT"});
  for (const auto& [pid, s] : rows) {
    table.push_back({fmt::format("{}:{}", pid, s.serial), s.proxy, s.client,
                     s.server.empty() ? "-" : s.server,
                     s.server_address.empty() ? "-" : s.server_address, std::to_string(pid),
                     s.phase, fmt::format("{:.1f}", static_cast<double>(s.age_ms) / 1000.0),
                     std::to_string(s.bytes_from_client), std::to_string(s.bytes_to_client)});
  }
  std::vector<std::size_t> widths(table.front().size(), 0);
  for (const auto& row : table) {
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const auto& row : table) {
    for (std::size_t i = 0; i < row.size(); ++i) {
      out += row[i];
      if (i + 1 < row.size()) out += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    out += '\n';
  }
  return out;
}

std::string render_json(const std::vector<std::pair<pid_t, worker::ListedSession>>& rows) {
  std::string out = "[";
  bool first = true;
  for (const auto& [pid, s] : rows) {
    out += first ? "\n  " : ",\n  ";
    first = false;
    out += fmt::format(
        "{{\"id\": {}, \"proxy\": {}, \"client\": {}, \"server\": {}, \"server_address\": {}, "
        "\"worker\": {}, \"phase\": {}, \"age_seconds\": {:.1f}, \"bytes_from_client\": {}, "
        "\"bytes_to_client\": {}}}",
        worker::json_string(fmt::format("{}:{}", pid, s.serial)), worker::json_string(s.proxy),
        worker::json_string(s.client),
        s.server.empty() ? std::string("null") : worker::json_string(s.server),
        s.server_address.empty() ? std::string("null") : worker::json_string(s.server_address), pid,
        worker::json_string(s.phase), static_cast<double>(s.age_ms) / 1000.0, s.bytes_from_client,
        s.bytes_to_client);
  }
  out += first ? "]\n" : "\n]\n";
  return out;
}

// Sends what the socket takes now from `offset` on: the new offset, or nothing when the asker
// is gone (logged).
std::optional<std::size_t> send_some(int fd, std::string_view text, std::size_t offset) {
  while (offset < text.size()) {
    const ssize_t w = event::retry_eintr([&] {
      return ::send(fd, text.data() + offset, text.size() - offset, MSG_NOSIGNAL | MSG_DONTWAIT);
    });
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (w <= 0) {
      spdlog::warn("sessions answer cut short after {} of {} bytes: {}", offset, text.size(),
                   w == -1 ? event::last_error().message() : std::string("closed"));
      return std::nullopt;
    }
    offset += static_cast<std::size_t>(w);
  }
  return offset;
}

}  // namespace

// `words`: the whole command ("show sessions ...", "kill session ID", "kill sessions client
// ADDRESS"). Refusals are answered here; a request is queued.
void Master::run_sessions_command(Connection& c, std::span<const std::string_view> words,
                                  const PeerAccess& peer, std::string_view line) {
  const auto refuse = [&](const std::string& why) {
    (void)send_some(c.fd.get(), protocol::error_answer("ferry: " + why + "\n"), 0);
    loop_.close_connection(c);
  };
  SessionsQuery q;
  q.client = &c;
  q.line = line;
  if (words[0] == "show") {
    std::vector<std::string_view> filter;
    for (std::size_t i = 2; i < words.size(); ++i) {
      if (words[i] == "--json") {
        q.json = true;
      } else {
        filter.push_back(words[i]);
      }
    }
    auto parsed = worker::parse_session_filter(filter, false);
    if (const auto* why = std::get_if<std::string>(&parsed)) {
      return refuse(fmt::format("show sessions: {}; {}", *why, kShowUsage));
    }
    const auto& f = std::get<worker::SessionFilter>(parsed);
    if (!f.proxy.empty() && std::none_of(config_->proxies.begin(), config_->proxies.end(),
                                         [&](const conf::Proxy& p) { return p.name == f.proxy; })) {
      return refuse(fmt::format("no proxy named \"{}\"", f.proxy));
    }
    q.request = "list";
    for (const std::string_view w : filter) q.request += fmt::format(" {}", w);
  } else if (words[1] == "session") {
    q.kill = true;
    q.single = true;
    if (words.size() != 3) return refuse("kill session ID (PID:SERIAL, as show sessions lists it)");
    const std::string_view id = words[2];
    const std::size_t colon = id.find(':');
    int pid = 0;
    std::uint64_t serial = 0;
    const auto number = [](std::string_view t, auto& out) {
      const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), out);
      return !t.empty() && ec == std::errc() && end == t.data() + t.size();
    };
    if (colon == std::string_view::npos || !number(id.substr(0, colon), pid) || pid <= 0 ||
        !number(id.substr(colon + 1), serial) || serial == 0) {
      return refuse(
          fmt::format("\"{}\" is not a session id (PID:SERIAL, as show sessions lists it)", id));
    }
    const WorkerProcess* w = find(pid);
    if (w == nullptr || !w->channel.fd) {
      return refuse(fmt::format("no session {}: no worker of this master has pid {}", id, pid));
    }
    q.only = pid;
    q.request = fmt::format("kill session {}", serial);
  } else {
    q.kill = true;
    if (words.size() != 4 || words[2] != "client") {
      return refuse("kill sessions client ADDRESS | kill sessions UPSTREAM/SERVER");
    }
    if (!worker::ClientMatch::parse(words[3])) {
      return refuse(fmt::format("\"{}\" is not a client address (IP or IP:PORT)", words[3]));
    }
    q.request = fmt::format("kill client {}", words[3]);
  }
  if (q.kill) spdlog::info("control: uid {} (pid {}): {}", peer.uid, peer.pid, line);
  if (session_queries_.size() > kMaxQueuedQueries) {
    return refuse("too many sessions requests under way; try again");
  }
  c.read.handler = on_waiting_client_read;
  session_queries_.push_back(std::move(q));
  if (session_queries_.size() == 1) start_sessions_query();
}

// The front request goes to its workers: a memfd each, the request line in it.
void Master::start_sessions_query() {
  if (session_queries_.empty()) return;
  SessionsQuery& q = session_queries_.front();
  q.since = event::monotonic_now();
  const char cmd =
      static_cast<char>(q.kill ? worker::Command::kill_sessions : worker::Command::list_sessions);
  const std::string request = q.request + "\n";
  for (auto& w : workers_) {
    if (w.pid <= 0 || !w.channel.fd || (q.only && *q.only != w.pid)) continue;
    SessionsPart& part = q.parts.emplace_back();
    part.pid = w.pid;
    event::UniqueFd fd(::memfd_create("ferry-sessions", MFD_CLOEXEC));
    if (!fd) {
      part.failed = fmt::format("memfd_create() failed: {}", event::last_error().message());
      spdlog::error("sessions request to worker pid {}: {}", w.pid, part.failed);
      continue;
    }
    if (::write(fd.get(), request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
      part.failed = fmt::format("writing the request failed: {}", event::last_error().message());
      spdlog::error("sessions request to worker pid {}: {}", w.pid, part.failed);
      continue;
    }
    const int raw = fd.get();
    if (auto ec = event::send_with_fds(w.channel.fd.get(), std::as_bytes(std::span(&cmd, 1)),
                                       {&raw, 1})) {
      part.failed = fmt::format("its channel refused the request: {}", ec.message());
      spdlog::error("sessions request to worker pid {}: {}", w.pid, part.failed);
      continue;
    }
    part.memfd = std::move(fd);
  }
  if (std::any_of(q.parts.begin(), q.parts.end(),
                  [](const SessionsPart& p) { return p.memfd && !p.answer; })) {
    arm(sessions_timer_, kSessionsWait, on_sessions_timer);
    return;
  }
  finish_sessions_query();  // nothing to wait for: pops it, and starts the next
}

// Worker `pid` reported an answer: for the request in flight, unless it is late for an earlier
// one (then its memfd holds no whole answer yet, and its own report follows). `gone`: it exited,
// no answer will come.
void Master::on_sessions_report(pid_t pid, bool gone) {
  if (session_queries_.empty()) return;
  SessionsQuery& q = session_queries_.front();
  bool waiting = false;
  for (SessionsPart& part : q.parts) {
    if (part.pid == pid && part.memfd && !part.answer) {
      if (auto text = read_memfd(part.memfd.get(), pid)) {
        part.answer = worker::parse_session_answer(*text);
      }
      if (!part.answer && gone) {
        part.memfd.reset();
        part.failed = "it exited";
      }
    }
    waiting = waiting || (part.memfd && !part.answer);
  }
  if (!waiting) finish_sessions_query();
}

void Master::on_sessions_timer(Event& ev) {
  auto& m = *static_cast<Master*>(ev.data);
  if (!m.session_queries_.empty()) m.finish_sessions_query();
}

// Answers the front request with what its workers said (naming those that did not), pops it
// and starts the next.
void Master::finish_sessions_query() {
  loop_.del_timer(sessions_timer_);
  SessionsQuery q = std::move(session_queries_.front());
  session_queries_.pop_front();
  std::vector<std::pair<pid_t, worker::ListedSession>> rows;
  std::uint64_t killed = 0;
  std::string notes;
  const auto ms = std::chrono::duration<double, std::milli>(event::monotonic_now() - q.since);
  for (SessionsPart& part : q.parts) {
    if (!part.answer) {
      notes += part.failed.empty()
                   ? fmt::format("worker pid {} did not answer within {} ms\n", part.pid,
                                 kSessionsWait.count())
                   : fmt::format("worker pid {} did not answer: {}\n", part.pid, part.failed);
      continue;
    }
    if (part.answer->skipped > 0) {
      spdlog::warn("worker pid {}'s sessions answer had {} line(s) that make no sense: skipped",
                   part.pid, part.answer->skipped);
    }
    killed += part.answer->killed.value_or(0);
    for (auto& s : part.answer->sessions) rows.emplace_back(part.pid, std::move(s));
  }
  if (!notes.empty())
    spdlog::warn("control: \"{}\": {}", q.line, notes.substr(0, notes.size() - 1));
  if (q.kill) {
    spdlog::info("control: \"{}\": killed {} session(s) in {:.3f} ms", q.line, killed, ms.count());
  }
  if (q.client != nullptr) {
    std::string answer;
    if (q.single && killed == 0) {
      answer = protocol::error_answer(
          notes.empty() ? fmt::format("ferry: no session {} (it ended, or moved to another "
                                      "worker)\n",
                                      q.line.substr(q.line.rfind(' ') + 1))
                        : "ferry: " + notes);
    } else if (q.kill) {
      answer = std::string(protocol::kOk) + fmt::format("killed {} session(s)\n", killed) + notes;
    } else {
      std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
        return a.first != b.first ? a.first < b.first : a.second.serial < b.second.serial;
      });
      // JSON stays one array: the silent workers are in the master's log only.
      const std::string body = q.json ? render_json(rows) : render_text(rows) + notes;
      answer = "ok " + std::to_string(body.size()) + "\n" + body;
    }
    send_long_answer(*q.client, std::move(answer));
  }
  start_sessions_query();
}

// A long list need not fit the socket: what it does not take now goes as it drains (within
// kAnswerWriteWait: a `ferry ctl` reads it at once), then the connection closes.
void Master::send_long_answer(Connection& c, std::string text) {
  const auto sent = send_some(c.fd.get(), text, 0);
  if (!sent || *sent == text.size()) {
    loop_.close_connection(c);
    return;
  }
  c.write.handler = on_answer_writable;
  if (auto ec = loop_.add_event(c.write, event::EventKind::write)) {
    spdlog::error("a sessions answer cannot wait for its socket: {}", ec.message());
    loop_.close_connection(c);
    return;
  }
  loop_.add_timer(c.write, kAnswerWriteWait);
  pending_answers_.push_back({&c, std::move(text), *sent});
}

void Master::on_answer_writable(Event& ev) {
  auto& c = *static_cast<Connection*>(ev.data);
  auto& m = *static_cast<Master*>(c.data);
  const auto it = std::find_if(m.pending_answers_.begin(), m.pending_answers_.end(),
                               [&](const PendingAnswer& p) { return p.client == &c; });
  if (it == m.pending_answers_.end()) return;
  std::optional<std::size_t> sent;
  if (ev.timedout) {
    ev.timedout = false;
    spdlog::warn("sessions answer: the asker read {} of {} bytes within {} ms; closing", it->sent,
                 it->text.size(), kAnswerWriteWait.count());
  } else {
    sent = send_some(c.fd.get(), it->text, it->sent);
  }
  if (sent && *sent < it->text.size()) {
    it->sent = *sent;
    return;
  }
  m.pending_answers_.erase(it);
  m.loop_.close_connection(c);
}

}  // namespace ferry::master
