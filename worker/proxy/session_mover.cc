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

#include <unistd.h>

#include <algorithm>

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
}  // namespace

SessionMover::SessionMover(event::EventLoop& loop, SessionSet& sessions, const conf::Config& cfg,
                           std::vector<const event::Listening*> listening)
    : loop_(loop), sessions_(sessions), cfg_(cfg), listening_(std::move(listening)) {
  retry_.handler = on_retry;
  retry_.data = this;
}

SessionMover::~SessionMover() { close_all(); }

void SessionMover::close_all() noexcept {
  started_ = false;  // nothing more is sent
  loop_.del_timer(retry_);
  for (auto& d : destinations_) {
    if (d->conn != nullptr) loop_.close_connection(*d->conn);
    d->conn = nullptr;
    d->dead = true;
  }
  for (auto& s : sources_) {
    if (s->conn != nullptr) source_gone(*s, false);
  }
  destinations_.clear();
  sources_.clear();
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
  if (started_ || destinations_.empty()) return;
  started_ = true;
  spdlog::info("moving {} session(s) to {} worker(s) of the new generation", sessions_.size(),
               destinations_.size());
  pump();
}

void SessionMover::on_retry(Event& ev) {
  auto& m = *static_cast<SessionMover*>(ev.data);
  m.pump();
}

void SessionMover::on_destination(Event& ev) {
  auto& c = *static_cast<Connection*>(ev.data);
  auto& m = *static_cast<SessionMover*>(c.data);
  for (auto& d : m.destinations_) {
    if (d->conn != &c) continue;
    if (ev.write) {
      m.pump();
    } else {
      m.read_answers(*d);
    }
    return;
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
  // Sends what `i` has gathered; false when that destination takes nothing more now.
  auto flush = [&](std::size_t i) {
    Building& b = building[i];
    if (b.frozen.empty()) return true;
    return send_batch(*destinations_[i], b.bytes, b.frozen, b.ids, b.fds);
  };
  std::vector<bool> open(destinations_.size());
  for (std::size_t i = 0; i < destinations_.size(); ++i) {
    open[i] = !destinations_[i]->dead && destinations_[i]->conn->write.ready;
  }
  std::size_t waiting_elsewhere = 0;
  for (Session *s = sessions_.first(), *next = nullptr; s != nullptr; s = next) {
    next = s->next;
    if (!s->movable()) {
      if (s->phase() != Session::Phase::moving) ++waiting_elsewhere;
      continue;
    }
    std::size_t i = destinations_.size();
    for (std::size_t k = 0; k < destinations_.size(); ++k) {
      const std::size_t j = (next_destination_ + k) % destinations_.size();
      if (open[j]) {
        i = j;
        break;
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
    if (size + 4 > kMaxMessage) {
      if (auto held = refused_log_.admit(loop_.now())) {
        spdlog::warn(
            "a session of proxy \"{}\" holds {} bytes, more than a move carries: it "
            "stays in this worker ({} more since the last message)",
            r.proxy, r.up.held.size() + r.down.held.size(), *held);
      }
      if (s->thaw()) s->stay();
      continue;
    }
    Building& b = building[i];
    if (b.frozen.size() == kMaxBatch || b.bytes.size() + size > kMaxMessage) {
      if (!flush(i)) {
        open[i] = false;
        // This session was frozen for the batch that could not go: it waits too.
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
  if (!ec) {
    for (std::size_t k = 0; k < frozen.size(); ++k) d.waiting.emplace(ids[k], frozen[k]);
    frozen.clear();
    ids.clear();
    fds.clear();
    batch.clear();
    return true;
  }
  if (ec.value() == EAGAIN || ec.value() == EWOULDBLOCK) {
    d.conn->write.ready = false;  // its writable report pumps again
  } else {
    spdlog::warn("sending sessions to a new worker failed: {}", ec.message());
  }
  for (Session* s : frozen) (void)s->thaw();
  frozen.clear();
  ids.clear();
  fds.clear();
  batch.clear();
  if (ec.value() != EAGAIN && ec.value() != EWOULDBLOCK) destination_gone(d, "its socket failed");
  return false;
}

void SessionMover::read_answers(Destination& d) {
  std::byte buf[4 + 5 * 65536];
  for (;;) {
    event::ReceivedMessage msg;
    const std::error_code ec = event::receive_with_fds(d.conn->fd.get(), buf, 0, msg);
    if (ec.value() == EAGAIN || ec.value() == EWOULDBLOCK) return;
    if (ec || msg.bytes == 0) {
      destination_gone(d, ec ? "its socket failed" : "it closed the socket");
      return;
    }
    std::vector<MoveAnswer> answers;
    std::string why;
    if (!decode_answers(std::span(buf, msg.bytes), answers, why)) {
      // Which sessions it holds is unknown: they wait, frozen, for its end to close.
      spdlog::error("a new worker's answer to moved sessions is malformed ({}): ignored", why);
      continue;
    }
    for (const MoveAnswer& a : answers) {
      auto it = d.waiting.find(a.id);
      if (it == d.waiting.end()) continue;
      Session* s = it->second;
      d.waiting.erase(it);
      if (a.verdict == MoveVerdict::adopted) {
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
  for (auto& src : m.sources_) {
    if (src->conn != &c) continue;
    if (ev.write) {
      while (!src->pending.empty()) {
        if (!m.send_answer(*src, src->pending.front())) return;
        src->pending.erase(src->pending.begin());
      }
    } else {
      m.read_batches(*src);
    }
    return;
  }
}

void SessionMover::read_batches(Source& src) {
  while (src.conn != nullptr) {
    event::ReceivedMessage msg;
    const std::error_code ec =
        event::receive_with_fds(src.conn->fd.get(), message_, kMaxBatch * kFdsPerSession, msg);
    if (ec.value() == EAGAIN || ec.value() == EWOULDBLOCK) return;
    if (ec || msg.bytes == 0) {
      if (ec) spdlog::warn("receiving moved sessions failed: {}", ec.message());
      // Its end closed: the old worker resumes nothing any more, what was adopted runs.
      source_gone(src, true);
      return;
    }
    if (exit_on_batch_) {
      spdlog::warn("FERRY_TEST_ADOPT_EXIT: exiting before answering for moved sessions");
      ::_exit(9);
    }
    receive(src, std::span<const std::byte>(message_.data(), msg.bytes), msg.fds);
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
  if (ec.value() == EAGAIN || ec.value() == EWOULDBLOCK) {
    src.conn->write.ready = false;
    return false;
  }
  if (ec) spdlog::warn("answering an old worker failed: {}", ec.message());
  start_adopted(a.adopted);
  if (ec) {
    source_gone(src, true);
    return false;
  }
  return true;
}

void SessionMover::start_adopted(std::vector<Session*>& adopted) {
  for (Session* s : adopted) s->resume();
  adopted.clear();
  // A worker retiring already passes them on.
  if (started_) pump();
}

void SessionMover::source_gone(Source& src, bool peer_closed) {
  if (src.conn == nullptr) return;
  for (PendingAnswer& a : src.pending) {
    if (peer_closed) {
      start_adopted(a.adopted);
    } else {
      // Unanswered: the old worker resumes them once this end closes.
      for (Session* s : a.adopted) s->forget();
    }
  }
  src.pending.clear();
  loop_.close_connection(*src.conn);
  src.conn = nullptr;
}

}  // namespace ferry::worker
