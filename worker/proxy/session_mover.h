// SessionMover: hands a retiring worker's established sessions to the workers of the new
// generation (reload_sessions = "move"), and takes in those handed to this one. The master
// gives each old worker a SOCK_SEQPACKET socket per new worker (a destination) and each new
// worker the other ends (sources). Both sides and the rule on failures are in docs/reload.md.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <vector>

#include "conf/config.h"
#include "event/connection.h"
#include "event/event_loop.h"
#include "event/listening.h"
#include "event/log_throttle.h"
#include "worker/proxy/session_record.h"

namespace ferry::worker {

class Session;
class SessionSet;

class SessionMover {
 public:
  // `listening`: what this worker serves (a moved session must arrive on one of them).
  SessionMover(event::EventLoop& loop, SessionSet& sessions, const conf::Config& cfg,
               std::vector<const event::Listening*> listening);
  ~SessionMover();
  SessionMover(const SessionMover&) = delete;
  SessionMover& operator=(const SessionMover&) = delete;

  // --- The old worker's side.
  // A socket to a worker of the new generation.
  void add_destination(event::UniqueFd sock);
  [[nodiscard]] bool has_destinations() const noexcept { return !destinations_.empty(); }
  // Hands every relaying session to the destinations, in batches, and goes on (sessions that
  // start relaying later, or arrive from an older worker) until the worker ends. A session a
  // destination refuses, or whose destination dies before answering, resumes here.
  void start();

  // --- The new worker's side.
  // A socket from a worker of an older generation.
  void add_source(event::UniqueFd sock);

  // Test hook: the n-th batch that arrives (from 1) ends the process (_exit(9)) before it is
  // read: the batches before it are answered (and run), it stays in the socket's queue.
  void exit_at_batch_for_tests(int n) noexcept { exit_at_batch_ = n; }
  // Test hook: the first batch that arrives is read only `pause` later (its sessions stay
  // frozen in the old worker meanwhile).
  void pause_before_adopting_for_tests(event::Msec pause) noexcept { adopt_pause_ = pause; }

  // This worker takes no more sessions (it stops): the old workers resume what they sent and
  // had no answer for.
  void close_sources() noexcept;
  // Every transfer socket closed (sessions still waiting for an answer are the caller's: they
  // are closed with the rest).
  void close_all() noexcept;

  // At most this many sessions (two fds each) and bytes travel in one message. The bytes stay
  // under the socket's default send buffer (net.core.wmem_default, 208 KiB): a session holding
  // more than that cannot move and drains where it is.
  static constexpr std::size_t kMaxBatch = 8;
  // Batches sent to one destination and not answered yet. A session is frozen from the moment
  // its batch is built until the new worker runs it: two batches in flight keep both workers
  // busy while each session waits for about one batch, not for every batch before it.
  static constexpr std::size_t kMaxInFlight = 2;
  static constexpr std::size_t kMaxMessage = 160 * 1024;

 private:
  struct Destination {
    event::Connection* conn = nullptr;
    std::map<std::uint32_t, Session*> waiting;  // sent, not answered yet
    std::size_t batches_out = 0;                // sent, their answers not read yet
    std::size_t max_sessions = kMaxBatch;       // a batch's, lowered after a send fails
    std::size_t max_bytes = kMaxMessage;
    bool closing = false;  // its end is closed: nothing more is sent, answers are read to the end
    bool dead = false;     // the end of file read: the socket is closed
    std::deque<std::chrono::steady_clock::time_point> sent_at;  // per batch out, oldest first
  };
  // What the hand-off took, logged as this worker ends (close_all()).
  struct Measured {
    std::size_t moved = 0;
    std::chrono::steady_clock::time_point started;
    std::chrono::steady_clock::time_point last_answer;
    std::chrono::microseconds stall_total{0};  // over the moved sessions
    std::chrono::microseconds stall_max{0};
  };
  struct PendingAnswer {
    std::vector<std::byte> bytes;
    std::vector<Session*> adopted;  // started once the answer is out
  };
  struct Source {
    event::Connection* conn = nullptr;
    std::vector<PendingAnswer> pending;  // answers the socket had no room for yet
  };

  event::Connection* watch(event::UniqueFd sock, event::EventHandler on, const char* what);
  static void on_destination(event::Event& ev);
  static void on_source(event::Event& ev);
  static void on_retry(event::Event& ev);
  static void on_adopt_pause(event::Event& ev);
  void pump();
  // Sends `batch` (frozen sessions `frozen`, fds `fds`) to `d`; false when it could not go
  // (the sessions are thawed: retried later, or elsewhere).
  bool send_batch(Destination& d, std::vector<std::byte>& batch, std::vector<Session*>& frozen,
                  std::vector<std::uint32_t>& ids, std::vector<int>& fds);
  void read_answers(Destination& d);
  void destination_gone(Destination& d, const char* why);
  void read_batches(Source& src);
  void exit_if_batch_queued(event::UniqueFd& sock);
  void receive(Source& src, std::span<const std::byte> message, std::vector<event::UniqueFd>& fds);
  bool send_answer(Source& src, PendingAnswer& a);
  void start_adopted(std::vector<Session*>& adopted);
  // `peer_closed`: the old worker closed its end (it resumes nothing: what was adopted runs);
  // else this end closes (the old worker resumes what was not answered: it must not run here).
  void source_gone(Source& src, bool peer_closed);

  event::EventLoop& loop_;
  SessionSet& sessions_;
  const conf::Config& cfg_;
  std::vector<const event::Listening*> listening_;
  std::vector<std::unique_ptr<Destination>> destinations_;
  std::vector<std::unique_ptr<Source>> sources_;
  std::size_t next_destination_ = 0;
  std::uint32_t next_id_ = 1;
  bool started_ = false;
  int exit_at_batch_ = 0;
  int batches_received_ = 0;
  Measured measured_;
  event::Msec adopt_pause_{0};
  event::Event adopt_pause_timer_;  // kAdoptPause: reads every source once it fires
  event::Event retry_;              // looks for sessions to move again while the worker ends
  std::vector<std::byte> message_;  // the receive buffer
  event::LogThrottle refused_log_{event::Msec{5'000}};
};

}  // namespace ferry::worker
