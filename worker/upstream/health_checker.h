// HealthChecker: the active health checks of one worker (the master gives the job to worker 0
// of each generation): every `interval` a TCP connect to each server of an upstream with a
// health_check, optional `send`, optional `expect` prefix, all within `timeout`; `fails`
// consecutive failures mark the server down and `passes` successes up again, on the HealthBoard.
#pragma once

#include <memory>
#include <vector>

#include "conf/config.h"
#include "event/event_loop.h"
#include "worker/stats/stats_table.h"
#include "worker/upstream/health_board.h"

namespace ferry::worker {

struct Probe;

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
  void start();
  void stop() noexcept;

 private:
  friend struct Probe;
  event::EventLoop& loop_;
  const conf::Config& cfg_;
  HealthBoard& board_;
  std::vector<std::unique_ptr<Probe>> probes_;
  StatsTable* stats_ = nullptr;
  int generation_ = 0;
};

}  // namespace ferry::worker
