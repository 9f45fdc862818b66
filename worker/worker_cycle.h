// The worker cycle: build this process's event loop over the listening sockets and run it
// until told to stop (nginx's ngx_worker_process_cycle). Until the proxy lands, an accepted
// connection is logged and closed.
#pragma once

#include <span>

#include "conf/config.h"
#include "event/accept_mutex.h"
#include "event/listening.h"

namespace ferry::worker {

struct WorkerSettings {
  const conf::Config* config = nullptr;
  std::span<const event::Listening* const> listening;
  event::AcceptMutexWord* accept_mutex = nullptr;  // shared word when accept_mutex is on
};

// Runs the loop until stop_worker() is called (from a signal handler or any thread).
// Returns the process exit status.
int run_worker_cycle(const WorkerSettings& settings);

// Async-signal-safe: asks the running worker cycle to stop.
void stop_worker() noexcept;

}  // namespace ferry::worker
