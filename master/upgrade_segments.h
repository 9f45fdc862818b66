// UpgradeSegments: the shared segments a binary upgrade passes to the new master besides the
// listeners, so that neither the per-client counts nor the statistics start over.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>

#include "event/shared_memory.h"
#include "worker/proxy/client_limits.h"
#include "worker/proxy/client_secret.h"
#include "worker/stats/stats_table.h"

namespace ferry::master {

// The per-client table (a memfd) is used as it is by both masters: its counts and its shares'
// owners carry over, and so does the secret that keys it (a sealed memfd of its own). The
// statistics are read from the old master's segments, read-only, and taken into this master's
// own (StatsTable::inherit) until the old master has exited.
class UpgradeSegments {
 public:
  // "2;REGISTRY;COUNTERS;LIMITS;SECRET": the layout's version, then the fds. An older ferry
  // passed "REGISTRY;COUNTERS;LIMITS;SHARE_BASE", with a per-client table of another layout.
  static constexpr const char* kVariable = "FERRY_UPGRADE_SEGMENTS";
  // Test only: the old master passes garbage for the statistics segments.
  static constexpr const char* kGarbageVariable = "FERRY_TEST_PASS_GARBAGE_STATS";

  // At start: the old master's per-client table and secret when `upgraded` and it passed them,
  // else a new table with a fresh secret. nullptr (logged) when none can be had.
  worker::ClientLimits* open_client_limits(bool upgraded);
  // The secret that keys the table open_client_limits() returned.
  [[nodiscard]] const worker::ClientLimits::Secret& client_secret() const noexcept {
    return secret_->value();
  }
  // Once the statistics are made and this configuration registered: takes the old master's
  // totals in a first time. Returns whether there are more to take (call inherit_more()).
  bool inherit_first(worker::StatsTable& stats);
  // Now and then while the old master may run; `old_master_gone`: it has exited, take its
  // totals for good. Returns whether there are more to take.
  bool inherit_more(worker::StatsTable& stats, bool old_master_gone);

  // In the forked child about to exec the new binary: clears FD_CLOEXEC on what is passed and
  // names it in kVariable.
  void pass_to_exec(const worker::StatsTable& stats) const;
  // In a forked worker: only the mappings it uses stay.
  void enter_worker() noexcept;

 private:
  event::SharedMemory limits_shm_;  // max_conns_per_client's counts, kept across reloads
  std::optional<worker::ClientSecret> secret_;
  bool pass_garbage_ = false;  // the test hook, read (and removed) at start
  int old_registry_ = -1;      // passed, not yet taken over
  int old_counters_ = -1;
  int old_master_ = 0;  // its pid, for the log
  std::unique_ptr<worker::StatsTable> old_stats_;
};

}  // namespace ferry::master
