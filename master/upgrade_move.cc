// Sessions that move between workers: to a reload's new generation (generations.cc asks for the
// sockets made here) and, over the upgrade link, between the two masters of a binary upgrade —
// the old master's workers to the new master's at QUIT or WINCH, back again at a rollback.
#include <sys/socket.h>

#include <algorithm>
#include <span>

#include <spdlog/spdlog.h>

#include "event/fd_passing.h"
#include "master/master.h"

namespace ferry::master {
namespace {

// The other end has closed (a worker or master that is exiting): nothing went wrong here.
bool gone(const std::error_code& ec) {
  return ec == std::errc::broken_pipe || ec == std::errc::connection_reset;
}

// Far more than any master's workers: what one request may ask for.
constexpr std::uint32_t kMaxPeerWorkers = 4096;

}  // namespace

bool moves_sessions(const conf::Config& config) {
  return std::any_of(config.proxies.begin(), config.proxies.end(),
                     [](const auto& p) { return p.reload_sessions == conf::ReloadSessions::move; });
}

// A SOCK_SEQPACKET pair: one end passed to `fresh` (it adopts sessions from it), the other
// returned for the worker whose sessions move. Empty (logged) when it could not be made.
event::UniqueFd Master::session_socket_to(WorkerProcess& fresh) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == -1) {
    spdlog::error("socketpair() to move sessions failed: {}; they drain instead",
                  event::last_error().message());
    return {};
  }
  event::UniqueFd to_old(sv[0]);
  const event::UniqueFd to_new(sv[1]);
  // Room for a whole batch (SessionMover::kMaxMessage) whatever net.core.wmem_default says
  // (the kernel caps it at wmem_max; a smaller one makes the workers send smaller batches).
  const int room = 256 * 1024;
  for (int fd : sv) {
    if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &room, sizeof room) == -1) {
      spdlog::warn("setsockopt(SO_SNDBUF) of a session socket failed: {}",
                   event::last_error().message());
    }
  }
  const char adopt = static_cast<char>(worker::Command::adopt_from);
  const int new_end = to_new.get();
  if (auto ec = event::send_with_fds(fresh.channel.fd.get(), std::as_bytes(std::span(&adopt, 1)),
                                     {&new_end, 1})) {
    spdlog::error("passing a session socket to worker pid {} failed: {}", fresh.pid, ec.message());
    return {};
  }
  return to_old;
}

bool Master::pass_move_end(WorkerProcess& old, int fd) {
  const char move = static_cast<char>(worker::Command::move_to);
  if (auto ec = event::send_with_fds(old.channel.fd.get(), std::as_bytes(std::span(&move, 1)),
                                     {&fd, 1})) {
    // A worker with no session exits at its quit, maybe before its sockets come: no error.
    spdlog::log(gone(ec) ? spdlog::level::info : spdlog::level::err,
                "passing a session socket to worker pid {} failed: {}", old.pid, ec.message());
    return false;
  }
  return true;
}

void Master::open_link() {
  if (!link_.is_open()) return;
  event::Connection& c = link_.connection();
  c.data = this;
  c.read.handler = on_link;
  if (loop_.add_event(c.read, event::EventKind::read)) {
    spdlog::error("the upgrade link cannot be watched: sessions will drain between the masters");
    link_.close();
  }
}

void Master::close_link() {
  move_recipients_.clear();
  peer_move_request_ = 0;
  if (!link_.is_open()) return;
  event::Connection& c = link_.connection();
  if (c.read.active) (void)loop_.del_event(c.read, event::EventKind::read, true);
  link_.close();
}

void Master::on_link(Event& ev) {
  auto& self = *static_cast<Master*>(static_cast<Connection*>(ev.data)->data);
  for (;;) {
    LinkReceived m;
    switch (self.link_.receive(m)) {
      case LinkRead::empty: return;
      case LinkRead::garbage: continue;
      case LinkRead::closed: {
        spdlog::info("the other master of the upgrade closed the link");
        const bool from_old_master = self.link_from_old_master_;
        self.close_link();
        // The old master is exiting: its statistics are taken for good as soon as it has (until
        // then a session that moved here is in its totals and ours). It may have exited already
        // (then the first poll takes them); polled briefly only.
        if (from_old_master) {
          self.old_master_leaving_since_ = event::monotonic_now();
          self.loop_.del_timer(self.inherit_timer_);
          self.arm(self.inherit_timer_, kOldMasterExitPoll, on_inherit_timer);
        }
        return;
      }
      case LinkRead::message: break;
    }
    switch (m.kind) {
      case LinkMessage::move_request:
        // Added to one not answered yet (WINCH, then QUIT before the answer): one answer for
        // both. Bounded: a master has far fewer workers.
        self.peer_move_request_ = std::min<std::uint32_t>(
            self.peer_move_request_ + std::max<std::uint32_t>(m.workers, 1), kMaxPeerWorkers);
        self.answer_move_request();
        break;
      case LinkMessage::ends: self.hand_ends_to_worker(std::move(m.fds)); break;
      case LinkMessage::refused:
        spdlog::warn("the other master of the upgrade takes no sessions ({}): they drain here",
                     m.why);
        self.move_recipients_.clear();
        break;
    }
  }
}

// The master that leaves (QUIT, or WINCH on the old master) while the other one of its upgrade
// runs: its serving workers' sessions move to the other's workers. Called before they are told
// to stop; each gets its sockets once the other master answers (a worker that has exited by
// then had nothing to move).
void Master::ask_peer_for_session_sockets() {
  const bool peer_runs =
      (new_master_ > 0 && !new_master_leaving_) || (upgraded_ && old_master_running());
  // The configuration that served (a reload cancelled by this stop never did).
  const conf::Config& serving = previous_ ? *previous_->config : *config_;
  if (!link_.is_open() || !peer_runs || !moves_sessions(serving)) return;
  // Appended: the workers of an earlier request (WINCH, then QUIT) still wait for their answer.
  const std::size_t before = move_recipients_.size();
  for (auto& w : workers_) {
    // Those of earlier generations still ending too (sessions that were connecting, a chain
    // of reloads): whatever they can still move goes. Once each (WINCH, then QUIT).
    if (w.ready && w.channel.fd && !w.moves_to_peer) move_recipients_.push_back(w.pid);
  }
  const std::size_t asked = move_recipients_.size() - before;
  if (asked == 0) return;
  if (auto ec = link_.send_move_request(static_cast<std::uint32_t>(asked))) {
    spdlog::error(
        "asking the other master of the upgrade for its workers' sockets failed: {}; "
        "the sessions drain",
        ec.message());
    move_recipients_.resize(before);
    return;
  }
  // Offered once (WINCH, then QUIT), and only once the request went.
  for (std::size_t k = before; k < move_recipients_.size(); ++k) {
    if (WorkerProcess* w = find(move_recipients_[k])) w->moves_to_peer = true;
  }
  spdlog::info("asked the other master of the upgrade to take the sessions of {} worker(s)", asked);
}

// The master that serves: a SOCK_SEQPACKET pair between each of the leaving master's workers
// and each of ours, our ends passed to our workers, theirs sent over the link one message per
// leaving worker. Waits while our workers are starting (a reload, or a rollback's restart after
// WINCH): generation_ready() calls again.
void Master::answer_move_request() {
  if (peer_move_request_ == 0 || !link_.is_open()) return;
  std::string refusal;
  if (stopping_) {
    refusal = "it is stopping";
  } else if (!moves_sessions(*config_)) {
    refusal = "reload_sessions = \"drain\" in its configuration";
  } else if (pending_generation_ != 0 || winched_) {
    return;  // once its workers serve
  }
  std::vector<WorkerProcess*> fresh;
  if (refusal.empty()) {
    for (auto& w : workers_) {
      if (w.generation == generation_ && w.ready && !w.told_to_stop && w.channel.fd &&
          fresh.size() < event::kMaxPassedFds) {
        fresh.push_back(&w);
      }
    }
    if (fresh.empty()) refusal = "none of its workers serves";
  }
  const std::uint32_t wanted = std::exchange(peer_move_request_, 0);
  if (!refusal.empty()) {
    spdlog::info("the other master of the upgrade asked to move its sessions here: no, {}",
                 refusal);
    if (auto ec = link_.send_refusal(refusal)) {
      spdlog::warn("answering the other master failed: {}", ec.message());
    }
    return;
  }
  std::size_t pairs = 0;
  for (std::uint32_t k = 0; k < wanted; ++k) {
    std::vector<event::UniqueFd> ends;
    std::vector<int> fds;
    for (WorkerProcess* w : fresh) {
      event::UniqueFd end = session_socket_to(*w);
      if (!end) continue;
      fds.push_back(end.get());
      ends.push_back(std::move(end));
    }
    // An empty message still answers for that worker: it gets nothing, and drains.
    if (auto ec = link_.send_ends(fds)) {
      spdlog::error("sending session sockets to the other master failed: {}; its sessions drain",
                    ec.message());
      return;
    }
    pairs += fds.size();
  }
  spdlog::info("the sessions of the other master's {} worker(s) move here ({} socket pair(s))",
               wanted, pairs);
}

// The leaving master: the next of its workers that asked gets these sockets.
void Master::hand_ends_to_worker(std::vector<event::UniqueFd> ends) {
  if (move_recipients_.empty()) return;  // refused meanwhile, or more than were asked for
  const pid_t pid = move_recipients_.front();
  move_recipients_.erase(move_recipients_.begin());
  WorkerProcess* w = find(pid);
  if (w == nullptr || !w->channel.fd) return;  // exited: it had nothing to move
  std::size_t passed = 0;
  for (const auto& fd : ends) passed += pass_move_end(*w, fd.get()) ? 1 : 0;
  spdlog::info("worker pid {} moves its sessions to the other master's {} worker(s)", pid, passed);
}

}  // namespace ferry::master
