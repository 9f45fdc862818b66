// StatsTable's two segments as they lie in memory: the registry (the master's, read-only in the
// workers) and the counters (the workers'). Private to worker/stats.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>

#include "worker/stats/stats_table.h"

namespace ferry::worker {

struct alignas(4096) StatsBlock {
  ProxyCounters proxies[StatsTable::kMaxProxies];
  ServerCounters servers[StatsTable::kMaxServers];
};

// Zeroes every entry of a block (see stats_segments.cc), committing no memory where it can.
void wipe(StatsBlock& b) noexcept;

struct StatsTable::Registry {
  struct ProxyEntry {
    std::atomic<std::uint64_t> epoch;  // of the latest configuration that has it
    std::uint16_t length;
    char name[kMaxName];
  };
  struct ServerEntry {
    std::atomic<std::uint64_t> config;  // epoch << 8 | kBackup | kDown | kChecked
    std::uint16_t upstream_length;
    std::uint16_t address_length;
    char upstream[kMaxName];
    char address[kMaxAddress];
  };
  struct alignas(64) WorkerEntry {
    std::atomic<pid_t> pid;  // 0: no worker in this slot
    std::atomic<std::int32_t> generation;
    std::atomic<std::int64_t> started;
  };
  struct alignas(64) MasterBlock {
    char version[kMaxVersion];
    std::atomic<pid_t> pid;
    std::atomic<std::int64_t> started;
    std::atomic<std::int32_t> generation;
    std::atomic<std::uint64_t> epoch;  // of the latest configuration
    // The reload record, read under `reload_seq` (odd while the master writes it).
    std::atomic<std::uint64_t> reload_seq;
    std::atomic<std::uint64_t> reloads_ok;
    std::atomic<std::uint64_t> reloads_failed;
    std::atomic<std::uint8_t> last_reload;
    std::atomic<std::int64_t> last_reload_at;
    std::atomic<std::uint32_t> error_length;
    std::atomic<std::uint64_t> error[kMaxError / 8];
  };

  MasterBlock master;
  // For the workers; the master keeps its own copies. Published with release after the entry.
  std::atomic<std::uint32_t> proxy_count;
  std::atomic<std::uint32_t> server_count;
  // Odd while the master folds a slot, starts a worker or inherits: readers retry, so that a
  // worker's counts are never seen both in its slot and in the retired block, nor in neither.
  alignas(64) std::atomic<std::uint64_t> fold_seq;
  ProxyEntry proxies[kMaxProxies];
  ServerEntry servers[kMaxServers];
  WorkerEntry workers[kSlots];
  StatsBlock retired;
  StatsBlock inherited;  // an old master's totals, after a binary upgrade (see inherit())
  // The totals of names reclaimed for new ones (see register_proxy()).
  ProxyCounters reclaimed_proxies;
  ServerCounters reclaimed_servers;
};

struct StatsTable::Counters {
  std::atomic<std::uint64_t> health[kMaxServers];  // see stats_table.cc
  struct alignas(64) Gauge {
    std::atomic<std::uint64_t> connections;
  };
  Gauge gauges[kSlots];
  StatsBlock slots[kSlots];
};

}  // namespace ferry::worker
