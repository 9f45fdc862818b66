// The control socket's requests (reload, upgrade, ready, status): accepting them, answering
// them, and the clients waiting for a reload's or an upgrade's verdict.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <string_view>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "master/control.h"
#include "master/control_protocol.h"
#include "master/master.h"
#include "worker/stats/render.h"
#include "worker/stats/server_view.h"

namespace ferry::master {

using event::UniqueFd;

// Answers the askers of the reload that just ended (or all, with `everyone`) and closes them.
void Master::answer_reload_waiters(std::string_view answer, bool everyone) {
  answer_all(control_clients_, answer);
  if (everyone) answer_all(queued_clients_, answer);
}

void Master::answer_all(std::vector<Connection*>& list, std::string_view answer) {
  for (Connection* c : list) {
    (void)::send(c->fd.get(), answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    loop_.close_connection(*c);
  }
  list.clear();
}

// Each connection must send its request line within kControlRequestTimeout; past
// kMaxUnrequestedControl of them waiting to, the oldest makes room for the newcomer.
void Master::on_control_accept(Event& ev) {
  auto& self = *static_cast<Master*>(static_cast<Connection*>(ev.data)->data);
  if (ev.timedout) {  // the pause after EMFILE/ENFILE is over
    ev.timedout = false;
    if (!self.control_.is_open() || ev.active) return;  // closed (stop) or reopened meanwhile
    if (self.loop_.add_event(ev, event::EventKind::read, event::EventLoop::kLevel)) {
      self.loop_.add_timer(ev, kControlAcceptPause);  // logged by add_event; try again later
    }
    return;
  }
  UniqueFd fd(::accept4(self.control_.fd(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
  if (!fd) {
    const int err = errno;
    if (err != EAGAIN && err != EWOULDBLOCK && err != ECONNABORTED && err != EINTR) {
      spdlog::error("accept() on the control socket failed: {}", event::errno_code(err).message());
      // Out of descriptors (or memory), the level-triggered socket would wake the loop at
      // once, for ever: stop polling it for a while (as the acceptor does for proxies).
      (void)self.loop_.del_event(ev, event::EventKind::read);
      self.loop_.add_timer(ev, kControlAcceptPause);
    }
    return;
  }
  if (const PeerAccess peer = self.peer_access(fd.get()); peer.access == Access::none) {
    spdlog::warn("control socket: refused: {}", peer.why);
    const std::string answer = protocol::error_answer("ferry: refused: " + peer.why + "\n");
    (void)::send(fd.get(), answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    // A request left unread would make the close a reset, which loses the answer.
    char request[kMaxControlLine];
    (void)::recv(fd.get(), request, sizeof request, MSG_DONTWAIT);
    return;
  }
  if (self.unrequested_.size() >= kMaxUnrequestedControl) {
    spdlog::warn("control socket: {} connections sent no request; closing the oldest",
                 self.unrequested_.size());
    self.loop_.close_connection(*self.unrequested_.front());
    self.unrequested_.erase(self.unrequested_.begin());
  }
  Connection* c = self.loop_.get_connection(std::move(fd));
  if (c == nullptr) {
    spdlog::warn("control socket: no free connection; refused one");
    return;
  }
  c->data = &self;
  c->read.handler = on_control_request;
  c->write.handler = [](Event&) {};
  if (self.loop_.add_connection(*c)) {
    self.loop_.close_connection(*c);
    return;
  }
  self.unrequested_.push_back(c);
  self.loop_.add_timer(c->read, kControlRequestTimeout);
  // The request usually came with the connection.
  on_control_request(c->read);
}

// A client waiting for a verdict gave up (EOF) before it came: forget it. An upgrade's asker
// may instead ask for the upgrade to be given up ("abort").
void Master::on_waiting_client_read(Event& e) {
  auto& cc = *static_cast<Connection*>(e.data);
  auto& m = *static_cast<Master*>(cc.data);
  char b[16];
  const ssize_t n = event::retry_eintr([&] { return ::read(cc.fd.get(), b, sizeof b); });
  if (n > 0 && std::string_view(b, static_cast<std::size_t>(n)).starts_with(protocol::kAbort) &&
      std::find(m.upgrade_clients_.begin(), m.upgrade_clients_.end(), &cc) !=
          m.upgrade_clients_.end()) {
    m.abort_upgrade();
    return;
  }
  if (n != 0) return;
  // A half-close after a command (socat at the end of its input) is no giving up: the answer
  // still goes out (its send fails harmlessly if the peer is gone, and each wait is bounded).
  const bool answering = std::any_of(m.admin_waiters_.begin(), m.admin_waiters_.end(),
                                     [&](const AdminWaiter& w) { return w.client == &cc; }) ||
                         std::any_of(m.session_queries_.begin(), m.session_queries_.end(),
                                     [&](const SessionsQuery& q) { return q.client == &cc; }) ||
                         std::any_of(m.pending_answers_.begin(), m.pending_answers_.end(),
                                     [&](const PendingAnswer& p) { return p.client == &cc; });
  if (answering) return;
  std::erase_if(m.admin_waiters_, [&](const AdminWaiter& w) { return w.client == &cc; });
  for (SessionsQuery& q : m.session_queries_) {
    if (q.client == &cc) q.client = nullptr;
  }
  std::erase_if(m.pending_answers_, [&](const PendingAnswer& p) { return p.client == &cc; });
  std::erase(m.control_clients_, &cc);
  std::erase(m.queued_clients_, &cc);
  std::erase(m.upgrade_clients_, &cc);
  m.loop_.close_connection(cc);
}

void Master::on_control_request(Event& ev) {
  auto& c = *static_cast<Connection*>(ev.data);
  auto& self = *static_cast<Master*>(c.data);
  if (ev.timedout) {
    spdlog::warn("control socket: no request within {} ms; closing the connection",
                 kControlRequestTimeout.count());
    std::erase(self.unrequested_, &c);
    self.loop_.close_connection(c);
    return;
  }
  // One line: looked at in place until its end has come (a client may send it in pieces), then
  // taken off the socket.
  char buf[kMaxControlLine];
  ssize_t n = event::retry_eintr(
      [&] { return ::recv(c.fd.get(), buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT); });
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
  const std::string_view peeked(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
  const std::size_t eol = peeked.find('\n');
  if (n > 0 && eol == std::string_view::npos && peeked.size() < sizeof buf) {
    // Not the whole line yet: the rest wakes the loop again (or the request timer fires). A
    // client that half-closed after a line without its end is answered at the timer.
    return;
  }
  if (n > 0) {
    const std::size_t take = eol == std::string_view::npos ? peeked.size() : eol + 1;
    n = event::retry_eintr([&] { return ::read(c.fd.get(), buf, take); });
  }
  std::erase(self.unrequested_, &c);
  self.loop_.del_timer(c.read);
  const std::string_view request(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
  if (n > 0 && request.find('\n') == std::string_view::npos) {
    const std::string answer = protocol::error_answer(
        fmt::format("ferry: a request line is at most {} bytes\n", kMaxControlLine - 1));
    (void)::send(c.fd.get(), answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    self.loop_.close_connection(c);
    return;
  }
  // The fixed requests that change something are for the peers who may write.
  const bool changes =
      request.starts_with(protocol::kReload) || request.starts_with(protocol::kUpgrade);
  if (changes) {
    if (const PeerAccess peer = self.peer_access(c.fd.get()); peer.access != Access::write) {
      spdlog::warn("control socket: refused \"{}\": {}", request.substr(0, request.size() - 1),
                   peer.why);
      const std::string answer = protocol::error_answer("ferry: refused: " + peer.why + "\n");
      (void)::send(c.fd.get(), answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      self.loop_.close_connection(c);
      return;
    }
  }
  if (request.starts_with(protocol::kReload)) {
    spdlog::info("reload requested on the control socket");
    // While a reload is pending, this asker waits for the next one (its own).
    (self.pending_generation_ != 0 || self.load_ ? self.queued_clients_ : self.control_clients_)
        .push_back(&c);
    c.read.handler = on_waiting_client_read;
    self.reload();
    return;
  }
  if (request.starts_with(protocol::kUpgrade)) {
    spdlog::info("binary upgrade requested on the control socket");
    if (const auto refused = self.upgrade()) {
      const std::string line = "ferry: " + refused->why + "\n";
      const std::string answer = refused->kind == UpgradeRefused::Kind::busy
                                     ? protocol::busy_answer(line)
                                     : protocol::error_answer(line);
      (void)::send(c.fd.get(), answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      self.loop_.close_connection(c);
      return;
    }
    // Answered when the new master exits (the upgrade failed) or this one stops.
    self.upgrade_clients_.push_back(&c);
    c.read.handler = on_waiting_client_read;
    return;
  }
  if (request.starts_with(protocol::kReady)) {
    const bool ready = self.served_ && self.pending_generation_ == 0 && !self.stopping_;
    const std::string_view answer = ready ? protocol::kOk : protocol::kWait;
    (void)::send(c.fd.get(), answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    self.loop_.close_connection(c);
    return;
  }
  if (request.starts_with(protocol::kStatus)) {
    // "ok LENGTH\n": the client can tell a whole table from one cut short.
    std::string answer = protocol::error_answer("ferry: no statistics in this master\n");
    if (self.stats_ != nullptr) {
      worker::Snapshot snapshot = self.stats_->snapshot();
      worker::annotate_servers(snapshot, *self.config_, self.runtime_.records(),
                               worker::steady_ms());
      const std::string table = worker::render_table(snapshot);
      answer = "ok " + std::to_string(table.size()) + "\n" + table;
    }
    // The table is small (a line per proxy, server and worker): it fits the socket buffer.
    std::size_t sent = 0;
    while (sent < answer.size()) {
      const ssize_t w = ::send(c.fd.get(), answer.data() + sent, answer.size() - sent,
                               MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w <= 0) {
        spdlog::warn("status answer cut short: {}",
                     w == -1 ? event::last_error().message() : std::string("closed"));
        break;
      }
      sent += static_cast<std::size_t>(w);
    }
    self.loop_.close_connection(c);
    return;
  }
  if (n > 0 && !request.starts_with(protocol::kAbort)) {
    // The operator's commands (`ferry ctl`); an unknown word is answered as before, with
    // kUnknownRequest first (an older `ferry -s upgrade` reads that line).
    const std::string_view line = request.substr(0, request.size() - 1);
    const std::string_view verb = line.substr(0, line.find(' '));
    if (verb == "show" || verb == "set" || verb == "add" || verb == "del" || verb == "kill" ||
        verb == "help") {
      self.run_command(c, line);
      return;
    }
  }
  const std::string answer = protocol::error_answer(protocol::kUnknownRequest);
  (void)::send(c.fd.get(), answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  self.loop_.close_connection(c);
}

}  // namespace ferry::master
