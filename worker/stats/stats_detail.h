// StatsTable's private helpers, shared by its files: the seqlocks' two sides and the list of
// counters a block holds. Private to worker/stats.
#pragma once

#include <sched.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>

#include "worker/stats/stats_table.h"

namespace ferry::worker::stats_detail {

// A reader whose writer died halfway (the seq stays at one odd value this long) takes what it
// reads rather than wait for ever. Only then: a writer merely preempted must not be read torn.
constexpr std::int64_t kStuckWriterNs = 1'000'000'000;

inline std::int64_t monotonic_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

constexpr auto kRelaxed = std::memory_order_relaxed;

// A server's configuration word holds the epoch of the latest configuration that has it
// shifted by this, and flags (see stats_table.cc).
constexpr int kEpochShift = 8;

// The writer's side of a seqlock: the master is the only writer of each.
class SeqWrite {
 public:
  explicit SeqWrite(std::atomic<std::uint64_t>& seq) noexcept : seq_(seq) {
    seq_.store(seq_.load(kRelaxed) + 1, kRelaxed);
    std::atomic_thread_fence(std::memory_order_release);
  }
  ~SeqWrite() { seq_.store(seq_.load(kRelaxed) + 1, std::memory_order_release); }
  SeqWrite(const SeqWrite&) = delete;
  SeqWrite& operator=(const SeqWrite&) = delete;

 private:
  std::atomic<std::uint64_t>& seq_;
};

// The reader's side: runs `read` (relaxed loads only) until no write overlapped it. With
// `max_tries` (0: no bound), gives up after that many reads that a write overlapped (or seq
// stayed odd) and returns false: for a segment whose writer cannot be trusted to finish.
template <typename Read>
bool read_consistent(const std::atomic<std::uint64_t>& seq, Read&& read,
                     std::uint32_t max_tries = 0) {
  std::uint64_t odd = 0;  // the odd value seen last, and since when
  std::int64_t odd_since = 0;
  for (std::uint32_t waits = 0;; ++waits) {
    if (max_tries != 0 && waits >= max_tries) return false;
    const std::uint64_t before = seq.load(std::memory_order_acquire);
    if ((before & 1) != 0) {
      if (max_tries != 0) {
        ::sched_yield();
        continue;
      }
      if (before != odd) {
        odd = before;
        odd_since = monotonic_ns();
      }
      // The clock only now and then: yielding is the common case.
      if (waits % 1024 != 0 || monotonic_ns() - odd_since < kStuckWriterNs) {
        ::sched_yield();
        continue;
      }
      read();
      return true;
    }
    read();
    std::atomic_thread_fence(std::memory_order_acquire);
    if (seq.load(kRelaxed) == before) return true;
  }
}

// The counters a block holds, and where each goes in a snapshot; `gauge`: dropped when folded.
template <typename Counters, typename Totals>
struct Field {
  std::atomic<std::uint64_t> Counters::*counter;
  std::uint64_t Totals::*total;
  bool gauge;
};
constexpr Field<ProxyCounters, Snapshot::Proxy> kProxyFields[] = {
    {&ProxyCounters::accepted, &Snapshot::Proxy::accepted, false},
    {&ProxyCounters::handled, &Snapshot::Proxy::handled, false},
    {&ProxyCounters::active, &Snapshot::Proxy::active, true},
    {&ProxyCounters::denied, &Snapshot::Proxy::denied, false},
    {&ProxyCounters::limited, &Snapshot::Proxy::limited, false},
    {&ProxyCounters::no_connections, &Snapshot::Proxy::no_connections, false},
    {&ProxyCounters::bytes_from_clients, &Snapshot::Proxy::bytes_from_clients, false},
    {&ProxyCounters::bytes_to_clients, &Snapshot::Proxy::bytes_to_clients, false},
};
constexpr Field<ServerCounters, Snapshot::Server> kServerFields[] = {
    {&ServerCounters::sessions, &Snapshot::Server::sessions, false},
    {&ServerCounters::active, &Snapshot::Server::active, true},
    {&ServerCounters::connect_failures, &Snapshot::Server::connect_failures, false},
    {&ServerCounters::bytes_sent, &Snapshot::Server::bytes_sent, false},
    {&ServerCounters::bytes_received, &Snapshot::Server::bytes_received, false},
};

inline std::uint64_t saturating_add(std::uint64_t a, std::uint64_t b) noexcept {
  return a > std::numeric_limits<std::uint64_t>::max() - b
             ? std::numeric_limits<std::uint64_t>::max()
             : a + b;
}

// The master's own totals stop just under the ceiling (past it a snapshot takes them for
// garbage): a rogue worker's counts just under it then cannot push an honest one's over.
inline std::uint64_t ceiling_add(std::uint64_t a, std::uint64_t b) noexcept {
  return std::min(saturating_add(a, b), StatsTable::kCeiling - 1);
}

}  // namespace ferry::worker::stats_detail
