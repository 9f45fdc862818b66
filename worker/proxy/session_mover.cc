// SessionMover: the old worker freezes relaying sessions, sends them in batches (records and
// their sockets) and forgets each once the new worker answers that it holds it; the new worker
// adopts what it can, answers, and only then lets the sessions run.
//
// The rule on failures, which never lets two workers relay one session and never loses one
// silently: a session is resumed by the old worker only when the new one refused it or closed
// its end of the socket without answering (it died, or found the message malformed, and then
// lets none of the unanswered sessions run). A new worker lets a session run only once its
// answer is on the socket, or once the old worker has closed its end (it is gone and cannot
// resume anything).
#include "worker/proxy/session_mover.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include <spdlog/spdlog.h>

#include "event/fd_passing.h"
#include "worker/proxy/session.h"
#include "worker/proxy/session_set.h"

namespace ferry::worker {

using event::Connection;
using event::Event;
using event::UniqueFd;

namespace {
// How often a retiring worker looks again for sessions to move (ones that were connecting, or
// waited for a destination with room).
constexpr event::Msec kRetryInterval{50};

// The destination or source whose socket `c` is (nullptr: one already closed).
template <typename Entry>
Entry* entry_of(const std::vector<std::unique_ptr<Entry>>& list, const Connection& c) {
  for (const auto& e : list) {
    if (e->conn == &c) return e.get();
  }
  return nullptr;
}
}  // namespace

SessionMover::SessionMover(event::EventLoop& loop, SessionSet& sessions, const conf::Config& cfg,
                           std::vector<const event::Listening*> listening)
    : loop_(loop), sessions_(sessions), cfg_(cfg), listening_(std::move(listening)) {
  retry_.handler = on_retry;
  retry_.data = this;
  adopt_pause_timer_.handler = on_adopt_pause;
  adopt_pause_timer_.data = this;
}

SessionMover::~SessionMover() { close_all(); }

void SessionMover::close_all() noexcept {
  if (started_ && measured_.moved > 0) {
    const Measured& m = measured_;
    const auto took = std::chrono::duration<double, std::milli>(m.last_answer - m.started);
    const auto average = std::chrono::duration<double, std::milli>(m.stall_total) / m.moved;
    spdlog::info(
        "moved {} session(s) in {:.1f} ms ({:.0f}/s); each waited {:.2f} ms on average, {:.2f} "
        "ms at most, from its batch's sending to the answer",
        m.moved, took.count(), took.count() > 0 ? m.moved / took.count() * 1e3 : 0.0,
        average.count(), std::chrono::duration<double, std::milli>(m.stall_max).count());
  }
  started_ = false;  // nothing more is sent
  loop_.del_timer(retry_);
  loop_.del_timer(adopt_pause_timer_);
  for (auto& d : destinations_) {
    // Sent and not answered: the new worker may run them already (its answer unread) or adopt
    // them from its queue once this end closes. Closed here without a word, whichever it is.
    if (!d->waiting.empty()) {
      spdlog::warn("{} moved session(s) unanswered as this worker ends: left to the new worker",
                   d->waiting.size());
    }
    for (const auto& [id, s] : d->waiting) s->forget();
    d->waiting.clear();
    if (d->conn != nullptr) loop_.close_connection(*d->conn);
    d->conn = nullptr;
    d->dead = true;
  }
  close_sources();
  destinations_.clear();
  sources_.clear();
}

void SessionMover::close_sources() noexcept {
  for (auto& s : sources_) {
    if (s->conn != nullptr) source_gone(*s, false);
  }
}

// ---- The old worker's side.

// A transfer socket in this loop, its handler `on` (null, logged, when it cannot be).
Connection* SessionMover::watch(UniqueFd sock, event::EventHandler on, const char* what) {
  Connection* c = loop_.get_connection(std::move(sock));
  if (c == nullptr) {
    spdlog::warn("no free connection for a socket {}: its sessions stay where they are", what);
    return nullptr;
  }
  c->data = this;
  c->read.handler = c->write.handler = on;
  if (auto ec = loop_.add_connection(*c)) {
    spdlog::error("cannot watch a socket {}: {}", what, ec.message());
    loop_.close_connection(*c);
    return nullptr;
  }
  c->write.ready = true;
  return c;
}

void SessionMover::add_destination(UniqueFd sock) {
  if (Connection* c = watch(std::move(sock), on_destination, "to a new worker")) {
    destinations_.push_back(std::make_unique<Destination>());
    destinations_.back()->conn = c;
  }
}

void SessionMover::start() {
  if (destinations_.empty()) return;
  if (started_) {
    pump();  // a destination added since
    return;
  }
  started_ = true;
  measured_.started = std::chrono::steady_clock::now();
  spdlog::info("moving {} session(s) to {} other worker(s)", sessions_.size(),
               destinations_.size());
  pump();
}

void SessionMover::on_adopt_pause(Event& ev) {
  auto& m = *static_cast<SessionMover*>(ev.data);
  m.adopt_pause_ = event::Msec{0};
  for (std::size_t i = 0; i < m.sources_.size(); ++i) {
    if (m.sources_[i]->conn != nullptr) m.read_batches(*m.sources_[i]);
  }
}

void SessionMover::on_retry(Event& ev) {
  auto& m = *static_cast<SessionMover*>(ev.data);
  m.pump();
}

void SessionMover::on_destination(Event& ev) {
  auto& c = *static_cast<Connection*>(ev.data);
  auto& m = *static_cast<SessionMover*>(c.data);
  Destination* d = entry_of(m.destinations_, c);
  if (d == nullptr) return;
  if (ev.write) {
    m.pump();
  } else {
    m.read_answers(*d);
  }
}

void SessionMover::pump() {
  if (!started_) return;
  struct Building {
    std::vector<std::byte> bytes;
    std::vector<Session*> frozen;
    std::vector<std::uint32_t> ids;
    std::vector<int> fds;
  };
  std::vector<Building> building(destinations_.size());
  // Sessions this pass leaves for a later one: still connecting, no room, or thawed after a
  // batch that could not go (already walked past: the retry brings them back).
  std::size_t waiting_elsewhere = 0;
  // Sends what `i` has gathered; false when that destination takes nothing more now.
  auto flush = [&](std::size_t i) {
    Building& b = building[i];
    if (b.frozen.empty()) return true;
    const std::size_t count = b.frozen.size();
    const bool sent = send_batch(*destinations_[i], b.bytes, b.frozen, b.ids, b.fds);
    if (!sent) waiting_elsewhere += count;
    return sent;
  };
  std::vector<bool> open(destinations_.size());
  for (std::size_t i = 0; i < destinations_.size(); ++i) {
    const Destination& d = *destinations_[i];
    open[i] = !d.dead && !d.closing && d.conn->write.ready && d.batches_out < kMaxInFlight;
  }
  for (Session *s = sessions_.first(), *next = nullptr; s != nullptr; s = next) {
    next = s->next;
    if (!s->movable()) {
      // One still on its way to relaying, or relaying before its server answered a Fast Open
      // connect, moves once it is there; one that stays never does.
      const Session::Phase p = s->phase();
      if ((p != Session::Phase::moving && p != Session::Phase::relaying) || s->answer_pending()) {
        ++waiting_elsewhere;
      }
      continue;
    }
    // The next destination with room, its full batch sent first: a session is frozen only
    // for a batch that can go (a freeze and a thaw cost four epoll_ctl calls).
    std::size_t i = destinations_.size();
    while (i == destinations_.size()) {
      for (std::size_t k = 0; k < destinations_.size(); ++k) {
        const std::size_t j = (next_destination_ + k) % destinations_.size();
        if (open[j]) {
          i = j;
          break;
        }
      }
      if (i == destinations_.size()) break;
      const Destination& d = *destinations_[i];
      if (building[i].frozen.size() < d.max_sessions) break;
      if (!flush(i) || d.batches_out >= kMaxInFlight) {
        open[i] = false;
        i = destinations_.size();
      }
    }
    if (i == destinations_.size()) {
      ++waiting_elsewhere;
      continue;  // none has room: its writable report (or the retry) comes back here
    }
    next_destination_ = i + 1;
    SessionRecord r;
    int fds[kFdsPerSession];
    if (!s->freeze(next_id_, r, fds)) continue;  // it failed while settling: closed
    const std::size_t size = encoded_size(r);
    if (size + 4 > kMaxMessage || !encodable(r)) {
      if (auto held = refused_log_.admit(loop_.now())) {
        spdlog::warn(
            "a session of proxy \"{}\" cannot travel ({} bytes held, a name or an address "
            "a move cannot carry): it stays in this worker ({} more since the last message)",
            r.proxy, r.up.held.size() + r.down.held.size(), *held);
      }
      if (s->thaw()) s->stay();
      continue;
    }
    Building& b = building[i];
    const Destination& d = *destinations_[i];
    if (!b.frozen.empty() && b.bytes.size() + size > d.max_bytes) {
      const bool sent = flush(i);
      if (!sent || d.batches_out >= kMaxInFlight) {
        open[i] = false;
        // This session was frozen for a batch that cannot go now: it waits too.
        (void)s->thaw();  // closed if it cannot be watched again
        ++waiting_elsewhere;
        continue;
      }
    }
    if (b.frozen.empty()) begin_batch(b.bytes);
    append_record(b.bytes, r);
    b.frozen.push_back(s);
    b.ids.push_back(next_id_);
    b.fds.insert(b.fds.end(), std::begin(fds), std::end(fds));
    ++next_id_;
  }
  for (std::size_t i = 0; i < building.size(); ++i) {
    if (open[i] && !flush(i)) open[i] = false;
  }
  // Sessions still connecting (or waiting for room) move once they can: looked at again soon.
  if (waiting_elsewhere > 0 && std::any_of(destinations_.begin(), destinations_.end(),
                                           [](const auto& d) { return !d->dead; })) {
    if (!retry_.timer_set) loop_.add_timer(retry_, kRetryInterval);
  }
}

bool SessionMover::send_batch(Destination& d, std::vector<std::byte>& batch,
                              std::vector<Session*>& frozen, std::vector<std::uint32_t>& ids,
                              std::vector<int>& fds) {
  const std::error_code ec = event::send_with_fds(d.conn->fd.get(), batch, fds);
  const std::size_t count = frozen.size();
  if (!ec) {
    for (std::size_t k = 0; k < count; ++k) d.waiting.emplace(ids[k], frozen[k]);
    ++d.batches_out;
    d.sent_at.push_back(std::chrono::steady_clock::now());
  } else {
    // Nothing of the message went (a seqpacket socket sends all or nothing): these sessions
    // were never the new worker's and resume at once. Those sent before wait for their answers
    // whatever this error says: the answers may be queued already.
    const int err = ec.value();
    if (err == EAGAIN || err == EWOULDBLOCK) {
      d.conn->write.ready = false;  // its writable report pumps again
    } else if (err == EPIPE || err == ECONNRESET) {
      d.closing = true;  // its end is closed: read what it answered, until the end of file
    } else if (d.max_sessions > 1) {
      // EMSGSIZE (a send buffer smaller than ours), ENOBUFS, ETOOMANYREFS: smaller batches.
      d.max_sessions = std::max<std::size_t>(1, d.max_sessions / 2);
      d.max_bytes = std::max<std::size_t>(16 * 1024, d.max_bytes / 2);
      spdlog::warn("sending {} session(s) to a new worker failed: {}; trying {} at a time", count,
                   ec.message(), d.max_sessions);
    } else {
      spdlog::warn("a session cannot be sent to a new worker: {}; it stays here", ec.message());
    }
    const bool stays = err != EAGAIN && err != EWOULDBLOCK && err != EPIPE && err != ECONNRESET &&
                       count == 1 && d.max_sessions == 1;
    for (Session* s : frozen) {
      if (s->thaw() && stays) s->stay();
    }
  }
  frozen.clear();
  ids.clear();
  fds.clear();
  batch.clear();
  return !ec;
}

void SessionMover::read_answers(Destination& d) {
  // An answer is 5 bytes a session of one batch.
  std::byte buf[4 + 5 * kMaxBatch];
  while (d.conn != nullptr) {
    event::ReceivedMessage msg;
    const std::error_code ec = event::receive_with_fds(d.conn->fd.get(), buf, 0, msg);
    const int err = ec.value();
    if (err == EAGAIN || err == EWOULDBLOCK) {
      pump();  // the answered batches made room for the next ones
      return;
    }
    // A seqpacket peer that closed with our batches unread reports ECONNRESET before the answers
    // it had sent: read on. Only the end of file says that no answer is left.
    if (err == ECONNRESET) continue;
    if (!ec && msg.bytes == 0) {
      destination_gone(d, "closed its socket");
      return;
    }
    if (ec) {
      spdlog::error("reading a new worker's answers failed: {}", ec.message());
      if (err == EMSGSIZE) continue;  // that message is gone; the sessions wait for the end
      return;
    }
    std::vector<MoveAnswer> answers;
    std::string why;
    if (!decode_answers(std::span(buf, msg.bytes), answers, why)) {
      // Which sessions it holds is unknown: they wait, frozen, for its end to close.
      spdlog::error("a new worker's answer to moved sessions is malformed ({}): ignored", why);
      // Its batch stays counted as out (nothing more is risked with that worker), but the next
      // answers are timed from their own batches.
      if (!d.sent_at.empty()) d.sent_at.pop_front();
      continue;
    }
    if (d.batches_out > 0) --d.batches_out;
    // Answers come in the order the batches went.
    const auto now = std::chrono::steady_clock::now();
    const auto stall =
        d.sent_at.empty()
            ? std::chrono::microseconds(0)
            : std::chrono::duration_cast<std::chrono::microseconds>(now - d.sent_at.front());
    if (!d.sent_at.empty()) d.sent_at.pop_front();
    for (const MoveAnswer& a : answers) {
      auto it = d.waiting.find(a.id);
      if (it == d.waiting.end()) continue;
      Session* s = it->second;
      d.waiting.erase(it);
      if (a.verdict == MoveVerdict::adopted) {
        ++measured_.moved;
        measured_.last_answer = now;
        measured_.stall_total += stall;
        measured_.stall_max = std::max(measured_.stall_max, stall);
        s->forget();
      } else if (s->thaw()) {
        s->stay();
      }
    }
  }
}

void SessionMover::destination_gone(Destination& d, const char* why) {
  if (d.dead) return;
  d.dead = true;
  if (!d.waiting.empty()) {
    spdlog::warn(
        "a worker of the new generation {} before answering for {} moved session(s): "
        "they resume here",
        why, d.waiting.size());
  }
  const auto waiting = std::move(d.waiting);
  d.waiting.clear();
  loop_.close_connection(*d.conn);
  d.conn = nullptr;
  for (const auto& [id, s] : waiting) (void)s->thaw();
  // To the destinations left, from the loop: this may run inside pump(), whose walk of the
  // sessions a nested one would disturb.
  if (started_ && !retry_.timer_set) loop_.add_timer(retry_, event::Msec{0});
}

// ---- The new worker's side.

void SessionMover::add_source(UniqueFd sock) {
  if (Connection* c = watch(std::move(sock), on_source, "from an old worker")) {
    sources_.push_back(std::make_unique<Source>());
    sources_.back()->conn = c;
    if (message_.empty()) message_.resize(kMaxMessage + 64);
  }
}

void SessionMover::on_source(Event& ev) {
  auto& c = *static_cast<Connection*>(ev.data);
  auto& m = *static_cast<SessionMover*>(c.data);
  Source* src = entry_of(m.sources_, c);
  if (src == nullptr) return;
  if (ev.write) {
    while (!src->pending.empty()) {
      if (!m.send_answer(*src, src->pending.front())) return;
      src->pending.erase(src->pending.begin());
    }
  } else {
    m.read_batches(*src);
  }
}

// FERRY_TEST_ADOPT_EXIT: ends the process, as kill -9 would, when a batch waits on `sock`. Its
// end is closed first, at once (the exit's teardown takes a while).
void SessionMover::exit_if_batch_queued(UniqueFd& sock) {
  char byte;
  if (::recv(sock.get(), &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0) {
    ::close(sock.release());
    spdlog::warn("FERRY_TEST_ADOPT_EXIT: exited before batch {}", exit_at_batch_);
    ::_exit(9);
  }
}

void SessionMover::read_batches(Source& src) {
  if (adopt_pause_.count() > 0) {  // the test hook: every source is read once it fires
    if (!adopt_pause_timer_.timer_set) loop_.add_timer(adopt_pause_timer_, adopt_pause_);
    return;
  }
  while (src.conn != nullptr) {
    if (exit_at_batch_ > 0 && batches_received_ + 1 == exit_at_batch_) {
      exit_if_batch_queued(src.conn->fd);  // it dies with the batch unread in its queue
    }
    event::ReceivedMessage msg;
    const std::error_code ec =
        event::receive_with_fds(src.conn->fd.get(), message_, kMaxBatch * kFdsPerSession, msg);
    const int err = ec.value();
    if (err == EAGAIN || err == EWOULDBLOCK) return;
    // The old worker closed its end with answers unread: batches it sent before may still be
    // queued here. It resumes nothing any more, so they are adopted as usual.
    if (err == ECONNRESET) continue;
    if (!ec && msg.bytes == 0) {
      source_gone(src, true);  // what was adopted runs: the old worker can resume nothing
      return;
    }
    if (ec) {
      // A message cut short (more fds than this process can take: EMSGSIZE) or a socket that
      // fails: this end closes, and the old worker resumes what was not answered.
      spdlog::warn("receiving moved sessions failed: {}", ec.message());
      source_gone(src, false);
      return;
    }
    ++batches_received_;
    // FERRY_TEST_ADOPT_EXIT: the batch before the fatal one is answered only once the fatal
    // one is queued, and the process ends right after the answer: the old worker then finds
    // that answer unread behind an ECONNRESET.
    const bool last = exit_at_batch_ > 1 && batches_received_ + 1 == exit_at_batch_;
    if (last) {
      pollfd p{src.conn->fd.get(), POLLIN, 0};
      (void)::poll(&p, 1, 1'000);
    }
    receive(src, std::span<const std::byte>(message_.data(), msg.bytes), msg.fds);
    if (last && src.conn != nullptr) exit_if_batch_queued(src.conn->fd);
  }
}

void SessionMover::receive(Source& src, std::span<const std::byte> message,
                           std::vector<UniqueFd>& fds) {
  std::vector<SessionRecord> records;
  std::string why;
  if (!decode_batch(message, records, why) || fds.size() != records.size() * kFdsPerSession) {
    if (why.empty()) why = "its sockets do not match its records";
    spdlog::error(
        "a batch of moved sessions is malformed ({}): closing the socket, the old "
        "worker resumes them",
        why);
    source_gone(src, false);
    return;
  }
  PendingAnswer a;
  std::vector<MoveAnswer> answers;
  answers.reserve(records.size());
  for (std::size_t i = 0; i < records.size(); ++i) {
    SessionRecord& r = records[i];
    const char* refused = nullptr;
    Session* s = sessions_.adopt(loop_, cfg_, listening_, r, std::move(fds[2 * i]),
                                 std::move(fds[2 * i + 1]), refused);
    if (s == nullptr) {
      if (auto held = refused_log_.admit(loop_.now())) {
        spdlog::warn(
            "a session of proxy \"{}\" from {} stays in the old worker: {} ({} more "
            "since the last message)",
            r.proxy, r.client.to_string(), refused, *held);
      }
      answers.push_back({r.id, MoveVerdict::refused});
      continue;
    }
    answers.push_back({r.id, MoveVerdict::adopted});
    a.adopted.push_back(s);
  }
  encode_answers(answers, a.bytes);
  if (!src.pending.empty() || !send_answer(src, a)) src.pending.push_back(std::move(a));
}

// False when the socket has no room (the answer waits for its writable report). A socket that
// failed is gone, the sessions adopted run (the old worker can resume nothing).
bool SessionMover::send_answer(Source& src, PendingAnswer& a) {
  const std::error_code ec = event::send_with_fds(src.conn->fd.get(), a.bytes, {});
  const int err = ec.value();
  if (err == EAGAIN || err == EWOULDBLOCK) {
    src.conn->write.ready = false;
    return false;
  }
  if (!ec || err == EPIPE || err == ECONNRESET) {
    // Answered, or the old worker's end is closed (it resumes nothing): they run here.
    start_adopted(a.adopted);
    if (ec) source_gone(src, true);
    return !ec;
  }
  // Not answered and the old worker still there: they must not run here. This end closes,
  // and the old worker resumes them with everything else it has no answer for.
  spdlog::warn("answering an old worker failed: {}; it resumes the sessions", ec.message());
  for (Session* s : a.adopted) s->forget();
  a.adopted.clear();
  source_gone(src, false);
  return false;
}

void SessionMover::start_adopted(std::vector<Session*>& adopted) {
  for (Session* s : adopted) s->resume();
  adopted.clear();
  // A worker retiring already passes them on.
  if (started_) pump();
}

void SessionMover::source_gone(Source& src, bool peer_closed) {
  if (src.conn == nullptr) return;
  // Detached first: ending a session below may end the worker's last one, and the worker then
  // closes every source (this one included).
  Connection* c = std::exchange(src.conn, nullptr);
  std::vector<PendingAnswer> pending = std::move(src.pending);
  src.pending.clear();
  loop_.close_connection(*c);
  for (PendingAnswer& a : pending) {
    if (peer_closed) {
      start_adopted(a.adopted);
    } else {
      // Unanswered: the old worker resumes them now that this end is closed.
      for (Session* s : a.adopted) s->forget();
    }
  }
}

}  // namespace ferry::worker
