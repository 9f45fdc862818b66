// HealthChecker: the active health checks of one worker (the master gives the job to worker 0
// of each generation): every `interval` a TCP connect to each address of each server of an
// upstream with a health_check, optional `send`, optional `expect` prefix, all within `timeout`;
// `fails` consecutive failures mark the address down and `passes` successes up again, on the
// HealthBoard. The addresses follow the worker's re-resolution of the servers' names and SRV
// services (a service's targets at their records' ports).
#pragma once

#include <memory>
#include <vector>

#include "conf/config.h"
#include "event/event_loop.h"
#include "event/log_throttle.h"
#include "worker/stats/stats_table.h"
#include "worker/upstream/health_board.h"

namespace ferry::worker {

struct CheckedServer;

class HealthChecker {
 public:
  HealthChecker(event::EventLoop& loop, const conf::Config& cfg, HealthBoard& board);
  ~HealthChecker();
  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  // Each check's result also goes to the shared statistics (the status endpoint's `health`).
  void publish_to(StatsTable* stats, int generation) noexcept {
    stats_ = stats;
    generation_ = generation;
  }
  // Test only (the master's FERRY_TEST_HEALTH_CHECK_NO_SOCKET): every probe's socket() fails with
  // EMFILE, as when the worker is out of descriptors.
  void fail_sockets_for_tests() noexcept { no_socket_ = true; }
  void start();
  void stop() noexcept;
  // `server`'s name or service now resolves to `addresses` (this worker's lookup: the first one
  // even when unchanged): the new ones are probed from now on, the others no longer; those keep
  // their verdict for a grace period, in case they come back, then their places on the board are
  // freed, with any place no probe holds (a dead checker's).
  void set_addresses(const conf::Server& server, const std::vector<conf::Endpoint>& addresses);
  // The servers an operator put in maintenance: not probed until they leave it (the others are
  // probed again).
  void set_paused(const std::vector<const conf::Server*>& paused) noexcept;

 private:
  friend struct CheckedServer;
  friend struct Probe;
  event::EventLoop& loop_;
  const conf::Config& cfg_;
  HealthBoard& board_;
  std::vector<std::unique_ptr<CheckedServer>> servers_;
  StatsTable* stats_ = nullptr;
  int generation_ = 0;
  bool no_socket_ = false;
  // Shortages on this side, said at most this often.
  event::LogThrottle local_errors_{event::Msec{10'000}};
};

}  // namespace ferry::worker
