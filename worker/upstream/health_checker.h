// HealthChecker: the active health checks of one worker (the master gives the job to worker 0
// of each generation): every `interval` a TCP connect to each server of an upstream with a
// health_check, optional `send`, optional `expect` prefix, all within `timeout`; `fails`
// consecutive failures mark the server down and `passes` successes up again, on the HealthBoard.
#pragma once

#include <memory>
#include <vector>

#include "conf/config.h"
#include "event/event_loop.h"
#include "worker/upstream/health_board.h"

namespace ferry::worker {

struct Probe;

class HealthChecker {
 public:
  HealthChecker(event::EventLoop& loop, const conf::Config& cfg, HealthBoard& board);
  ~HealthChecker();
  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  void start();
  void stop() noexcept;

 private:
  event::EventLoop& loop_;
  const conf::Config& cfg_;
  HealthBoard& board_;
  std::vector<std::unique_ptr<Probe>> probes_;
};

}  // namespace ferry::worker
