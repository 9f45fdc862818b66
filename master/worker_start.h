// The worker's side of the fork: from the master's child to a running worker cycle (signal
// dispositions, user switch, log ownership, CPU affinity, privileges).
#pragma once

#include <sys/types.h>

#include <string>

#include "conf/config.h"
#include "worker/worker_cycle.h"

namespace ferry::master {

// Test only: "N" makes the first N workers the master starts write garbage over every statistics
// word they can (what a worker gone wrong might do), to show that the master does not trust them.
constexpr const char* kScribbleStatsVariable = "FERRY_TEST_SCRIBBLE_STATS";

// Runs in the forked child once the master's own descriptors and threads are dropped; `settings`
// names everything the worker keeps. `scribble`: kScribbleStatsVariable chose this worker.
// Returns the worker's exit status.
int start_worker(worker::WorkerSettings settings, bool scribble);

// Root created or reopened the logs of `cfg`; they become `name`'s (uid) so that a worker running
// as that user can reopen them.
void give_logs_to(const conf::Config& cfg, const std::string& name, uid_t uid);

}  // namespace ferry::master
