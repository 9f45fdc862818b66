// The worker cycle (nginx's ngx_worker_process_cycle): build this process's event loop over
// the listening sockets it serves, report "ready" to the master, run until told to stop, and
// shut down gracefully — listeners closed, sessions finished or cut at worker_shutdown_timeout.
#pragma once

#include <vector>

#include "conf/config.h"
#include "event/accept_mutex.h"
#include "event/clock.h"
#include "event/listening.h"
#include "worker/proxy/client_limits.h"
#include "worker/stats/stats_table.h"
#include "worker/upstream/server_admin.h"
#include "worker/worker_counters.h"

namespace ferry::worker {

namespace tls {
class TlsContexts;
}

struct WorkerSettings {
  const conf::Config* config = nullptr;
  // The sockets this worker serves, and only those: the acceptor works on duplicates and the
  // worker closes these once it has them, so a socket lives in no worker that stopped serving it.
  std::vector<event::Listening*> listening;
  event::AcceptMutexWord* accept_mutex = nullptr;  // shared word when accept_mutex is on
  int channel = -1;                                // the worker's end; -1: no master
  void* health_board = nullptr;                    // shared HealthBoard of this generation
  bool run_health_checks = false;                  // this worker probes the servers
  const ServerAdminTable* server_admin = nullptr;  // the operator's settings (read only)
  WorkerCounters* counters = nullptr;              // this worker's shared entry, if any
  // The per-client session counts of every worker of every generation, the secret that keys
  // them (the master's copy, in this process's memory) and this worker's share.
  ClientLimits* client_limits = nullptr;
  const ClientLimits::Secret* client_secret = nullptr;
  std::size_t limits_share = ClientLimits::kNoShare;
  // The statistics of every worker of every generation, and this worker's block in it (its
  // counters entry's index, which is also its share of the servers' counts in the HealthBoard).
  StatsTable* stats = nullptr;
  // The configuration's TLS contexts, built by the master (null: none has tls).
  const tls::TlsContexts* tls = nullptr;
  std::size_t stats_slot = StatsTable::kNoSlot;
  int slot = 0;
  int generation = 0;
  // Test only (the master's FERRY_TEST_UNREADY_GENERATION): serve without ever reporting ready,
  // as a worker stuck in its start would.
  bool withhold_ready = false;
  // Test only (the master's FERRY_TEST_HEALTH_CHECK_NO_SOCKET): the checks' socket() fails.
  bool health_check_no_socket = false;
  // Test only (the master's FERRY_TEST_ADOPT_EXIT): exit at the first batch of moved sessions,
  // before answering, as a worker killed mid-transfer would.
  int exit_on_adopt = 0;       // at this batch (from 1); 0: never
  event::Msec adopt_pause{0};  // before the first batch moved here is read (tests)
  // Called when the worker starts shutting down (sets the "is shutting down" process title).
  void (*on_shutdown)() = nullptr;
};

// Runs the loop until the master says quit (graceful: stop accepting, let sessions finish within
// worker_shutdown_timeout) or terminate (close everything now), the channel closes (master
// gone: graceful), or stop_worker() is called. Returns the process exit status (kFatalExit when
// it cannot start).
int run_worker_cycle(const WorkerSettings& settings);

// Async-signal-safe: asks the running worker cycle to shut down gracefully (`graceful`, as for
// SIGQUIT) or at once (SIGTERM, SIGINT).
void stop_worker(bool graceful = false) noexcept;

}  // namespace ferry::worker
