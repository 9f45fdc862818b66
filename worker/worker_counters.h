// WorkerCounters: each worker's connection counts, in memory shared with the master so that it
// can report them (systemd's STATUS=, later the status endpoint) without asking the workers.
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <bitset>
#include <cstdint>
#include <new>

namespace ferry::worker {

// One worker's entry, written only by that worker (relaxed: these are statistics), read by the
// master. A cache line each, so that workers never share one.
struct alignas(64) WorkerCounters {
  std::atomic<pid_t> owner{0};  // 0: free; -1: handed out, the worker not forked yet
  std::atomic<std::uint64_t> accepted{0};
  std::atomic<std::uint64_t> active{0};
  // The ServerAdminTable version this worker applied last (the master compares, never trusts).
  std::atomic<std::uint64_t> admin_version{0};
};

// A fixed table of entries: the master takes one for each worker it starts and frees it when it
// reaps that worker, so the counts of a killed worker vanish with it.
class CountersTable {
 public:
  static constexpr std::size_t kEntries = 512;

  static CountersTable* create(void* shared_memory) { return new (shared_memory) CountersTable; }

  // Which entries the master handed out, in the master's own memory: the owner words are in
  // memory every worker writes, and a rogue one clearing a live worker's would have that entry
  // handed out again (and zeroed under the live worker).
  using Taken = std::bitset<kEntries>;

  // Master only. nullptr when every entry is taken (the worker then goes uncounted).
  WorkerCounters* take(Taken& taken) noexcept {
    for (std::size_t i = 0; i < kEntries; ++i) {
      if (taken.test(i)) continue;
      taken.set(i);
      entries_[i].owner.store(-1);
      return &entries_[i];
    }
    return nullptr;
  }
  // Master only: the worker is gone. Returns how many it had accepted, for a running total.
  std::uint64_t release(WorkerCounters& e, Taken& taken) noexcept {
    taken.reset(index_of(e));
    const std::uint64_t accepted = e.accepted.exchange(0);
    e.active.store(0);
    e.admin_version.store(0);
    e.owner.store(0);
    return accepted;
  }
  // An entry's place in the table: it also names the worker's share in ClientLimits.
  [[nodiscard]] std::size_t index_of(const WorkerCounters& e) const noexcept {
    return static_cast<std::size_t>(&e - entries_.data());
  }

  struct Totals {
    std::uint64_t accepted = 0;  // by workers alive now
    std::uint64_t active = 0;
  };
  [[nodiscard]] Totals totals() const noexcept {
    Totals t;
    for (const auto& e : entries_) {
      if (e.owner.load(std::memory_order_relaxed) == 0) continue;
      t.accepted += e.accepted.load(std::memory_order_relaxed);
      t.active += e.active.load(std::memory_order_relaxed);
    }
    return t;
  }

 private:
  std::array<WorkerCounters, kEntries> entries_{};
};

}  // namespace ferry::worker
