// Tests of what the master trusts in worker/stats: a worker cannot write the registry (not by
// mprotect, not through /proc/self/mem; with the seal or, before Linux 5.1, without), and
// garbage in a worker's block is left out of the totals and dropped by the fold, while honest
// counts, a dead worker's half-closed session among them, are kept; garbage in a free slot is
// not blamed on its next worker (nor at an index registered later), nor can a rogue worker push
// a proxy's history out or an honest one's fold after it; the fold allocates nothing.
// The replaced operator new and delete below are malloc and free, seen by gcc as a mismatch
// wherever it inlines a delete.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>

#include <gtest/gtest.h>

#include "worker/stats/stats_table.h"

namespace ferry::worker {
namespace {

class StatsTrustTest : public ::testing::Test {
 protected:
  void SetUp() override {
    stats_ = StatsTable::create("1.2.3", 4242, 1000);
    ASSERT_NE(stats_, nullptr);
    ASSERT_EQ(stats_->register_proxy("web"), 0u);
    ASSERT_EQ(stats_->register_server("app", "h:1"), 0u);
  }

  // Runs `child` in a forked process that has become a worker; returns its wait status.
  template <typename Child>
  int in_worker(Child&& child) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      if (!stats_->enter_worker()) ::_exit(100);
      ::_exit(child());
    }
    int status = 0;
    if (pid == -1 || ::waitpid(pid, &status, 0) != pid) ADD_FAILURE() << "fork/waitpid failed";
    return status;
  }

  std::unique_ptr<StatsTable> stats_;
};

bool exited_with(int status, int code) { return WIFEXITED(status) && WEXITSTATUS(status) == code; }

// In a worker: 0 when the registry cannot be written in any way and its own counters can (it
// counts 7 accepted in slot 3), else which check failed.
int registry_is_read_only(StatsTable& stats) {
  const StatsTable::Segment registry = stats.registry_segment();
  {
    void* p = const_cast<void*>(registry.data);
    if (::mprotect(p, registry.size, PROT_READ | PROT_WRITE) == 0) return 1;
    if (errno != EACCES) return 2;
    // /proc/PID/mem writes past a mapping's protection (FOLL_FORCE), but not into a shared
    // mapping that may never be writable.
    const int mem = ::open("/proc/self/mem", O_RDWR | O_CLOEXEC);
    if (mem == -1) return 3;
    const std::uint32_t garbage = 0xffffffff;
    const bool wrote =
        ::pwrite(mem, &garbage, sizeof garbage, reinterpret_cast<off_t>(registry.data)) != -1;
    ::close(mem);
    if (wrote) return 4;
    // Its own counters it writes as before.
    ProxyCounters* c = stats.proxy_counters(3, "web");
    if (c == nullptr) return 5;
    stat_add(c->accepted, 7);
    // And the kernel refuses to store into the registry (EFAULT): a read(2) into it rather
    // than a plain store, whose SIGSEGV ASan would catch and report.
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) == -1) return 6;
    const char byte = 1;
    if (::write(pipe_fds[1], &byte, 1) != 1) return 7;
    const ssize_t stored = ::read(pipe_fds[0], p, 1);
    const int why = errno;
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    return stored == -1 && why == EFAULT ? 0 : 8;
  }
}

TEST_F(StatsTrustTest, AWorkerCannotMakeTheRegistryWritable) {
  stats_->worker_started(3, 103, 1, 1500);
  const int status = in_worker([&] { return registry_is_read_only(*stats_); });
  EXPECT_TRUE(exited_with(status, 0)) << status;
  EXPECT_EQ(stats_->snapshot(2000).proxies.at(0).accepted, 7u);
  EXPECT_EQ(stats_->snapshot(2000).version, "1.2.3");
  // The master's writes still reach the workers' view.
  ASSERT_EQ(stats_->register_proxy("db"), 1u);
  EXPECT_TRUE(exited_with(in_worker([&] { return stats_->proxy_index("db") == 1u ? 0 : 1; }), 0));
}

// A kernel before 5.1 refuses F_SEAL_FUTURE_WRITE: the master still starts, and the workers'
// view, mapped from a read-only open of the memfd, is as read-only as with the seal.
TEST_F(StatsTrustTest, WithoutTheFutureWriteSealTheRegistryStaysReadOnlyToWorkers) {
  StatsTable::refuse_future_write_seal_once();
  stats_ = StatsTable::create("1.2.3", 4242, 1000);
  ASSERT_NE(stats_, nullptr) << "the master would exit 1";
  ASSERT_EQ(stats_->register_proxy("web"), 0u);
  stats_->worker_started(3, 103, 1, 1500);
  const int status = in_worker([&] { return registry_is_read_only(*stats_); });
  EXPECT_TRUE(exited_with(status, 0)) << status;
  EXPECT_EQ(stats_->snapshot(2000).proxies.at(0).accepted, 7u);
  ASSERT_EQ(stats_->register_proxy("db"), 1u);
  EXPECT_TRUE(exited_with(in_worker([&] { return stats_->proxy_index("db") == 1u ? 0 : 1; }), 0));
}

TEST_F(StatsTrustTest, GarbageIsLeftOutAndDroppedByTheFold) {
  // An honest worker in slot 4, one that goes wrong in slot 5.
  stats_->worker_started(4, 104, 1, 1500);
  stats_->worker_started(5, 105, 1, 1500);
  ProxyCounters* honest = stats_->proxy_counters(4, "web");
  stat_add(honest->accepted, 10);
  stat_add(honest->handled, 8);
  stat_add(honest->active, 2);
  stat_add(stats_->server_counters(4, "app", "h:1")->sessions, 9);
  std::string said;
  const int status = in_worker([&] {
    stat_add(stats_->proxy_counters(5, "web")->accepted, 1000);
    said = stats_->scribble(5);
    return said.find("stays read-only") != std::string::npos ? 0 : 1;
  });
  EXPECT_TRUE(exited_with(status, 0)) << status;

  const auto check = [&](std::uint64_t accepted, std::uint64_t handled, std::uint64_t active) {
    const Snapshot s = stats_->snapshot(2000);
    ASSERT_EQ(s.proxies.size(), 1u);
    EXPECT_EQ(s.proxies[0].name, "web");
    EXPECT_EQ(s.proxies[0].accepted, accepted);
    EXPECT_EQ(s.proxies[0].handled, handled);
    EXPECT_EQ(s.proxies[0].active, active);
    EXPECT_EQ(s.proxies[0].bytes_from_clients, 0u);
    ASSERT_EQ(s.upstreams.size(), 1u);
    EXPECT_EQ(s.upstreams[0].servers.at(0).sessions, 9u);
    EXPECT_EQ(s.upstreams[0].servers.at(0).health, CheckResult::none);
    for (const auto& w : s.workers) EXPECT_EQ(w.connections, 0u);  // garbage past the ceiling
  };
  check(10, 8, 2);
  EXPECT_GT(stats_->fold(5), 0u);  // the master logs this
  check(10, 8, 2);
  stats_->worker_started(5, 106, 1, 1600);  // the slot is clean for the next worker
  check(10, 8, 2);
  EXPECT_EQ(stats_->fold(4), 0u);
  check(10, 10, 0);
}

// Relations a worker breaks only between two of its stores are clamped, not taken for garbage;
// broken further, they are.
TEST_F(StatsTrustTest, RelationsAreClampedAndCheckedAtTheFold) {
  const auto slot_with = [&](std::size_t slot, std::uint64_t accepted, std::uint64_t handled,
                             std::uint64_t active) {
    stats_->worker_started(slot, static_cast<pid_t>(100 + slot), 1, 0);
    ProxyCounters* c = stats_->proxy_counters(slot, "web");
    stat_add(c->accepted, accepted);
    stat_add(c->handled, handled);
    stat_add(c->active, active);
  };
  // Killed between counting a session handled and no longer active.
  slot_with(1, 10, 6, 5);
  Snapshot s = stats_->snapshot(0);
  EXPECT_EQ(s.proxies[0].accepted, 10u);
  EXPECT_EQ(s.proxies[0].handled, 6u);
  EXPECT_EQ(s.proxies[0].active, 4u);
  EXPECT_EQ(stats_->fold(1), 0u);
  s = stats_->snapshot(0);
  EXPECT_EQ(s.proxies[0].accepted, 10u);
  EXPECT_EQ(s.proxies[0].handled, 10u);
  EXPECT_EQ(s.proxies[0].active, 0u);

  // More handled than accepted, by far: not kept.
  slot_with(2, 5, 500, 0);
  s = stats_->snapshot(0);
  EXPECT_EQ(s.proxies[0].accepted, 15u);
  EXPECT_EQ(s.proxies[0].handled, 15u);  // clamped while it lives
  EXPECT_EQ(stats_->fold(2), 1u);
  s = stats_->snapshot(0);
  EXPECT_EQ(s.proxies[0].accepted, 10u);
  EXPECT_EQ(s.proxies[0].handled, 10u);

  // A server with more open sessions than it ever had.
  stats_->worker_started(3, 103, 1, 0);
  stat_add(stats_->server_counters(3, "app", "h:1")->sessions, 2);
  stat_add(stats_->server_counters(3, "app", "h:1")->active, 3);
  EXPECT_EQ(stats_->snapshot(0).upstreams[0].servers[0].active, 2u);
  EXPECT_EQ(stats_->fold(3), 1u);
  EXPECT_EQ(stats_->snapshot(0).upstreams[0].servers[0].sessions, 0u);
}

// Counts just under the ceiling pass every check of a block: the retired totals stop just under
// it, so that neither a proxy's history is pushed out of the snapshot, nor is every honest
// worker that counted there afterwards taken for a rogue one and its whole fold dropped.
// A worker started in `slot` that accepted and handled `n` sessions of "web".
void handled_in(StatsTable& stats, std::size_t slot, std::uint64_t n) {
  stats.worker_started(slot, static_cast<pid_t>(100 + slot), 1, 0);
  stat_add(stats.proxy_counters(slot, "web")->accepted, n);
  stat_add(stats.proxy_counters(slot, "web")->handled, n);
}

TEST_F(StatsTrustTest, ARogueWorkerCannotEraseAProxysHistory) {
  handled_in(*stats_, 1, 10);
  ASSERT_EQ(stats_->fold(1), 0u);
  handled_in(*stats_, 2, StatsTable::kCeiling - 1);
  EXPECT_EQ(stats_->fold(2), 0u);
  const Snapshot s = stats_->snapshot(0);
  ASSERT_EQ(s.proxies.size(), 1u);
  EXPECT_EQ(s.proxies[0].accepted, StatsTable::kCeiling - 1);
  EXPECT_EQ(s.proxies[0].handled, StatsTable::kCeiling - 1);
}

TEST_F(StatsTrustTest, AnHonestFoldAfterAPoisoningOneIsKept) {
  handled_in(*stats_, 1, 10);
  ASSERT_EQ(stats_->fold(1), 0u);
  // Just under the ceiling once added to the history: a fold that passes every check.
  handled_in(*stats_, 2, StatsTable::kCeiling - 20);
  EXPECT_EQ(stats_->fold(2), 0u);
  // An honest worker counts sessions there and on a server.
  handled_in(*stats_, 3, 15);
  stat_add(stats_->server_counters(3, "app", "h:1")->sessions, 4);
  EXPECT_EQ(stats_->fold(3), 0u);
  const Snapshot s = stats_->snapshot(0);
  ASSERT_EQ(s.proxies.size(), 1u);
  EXPECT_EQ(s.proxies[0].accepted, StatsTable::kCeiling - 1);
  EXPECT_EQ(s.proxies[0].handled, StatsTable::kCeiling - 1);
  EXPECT_EQ(s.upstreams.at(0).servers.at(0).sessions, 4u);
}

// Garbage a worker wrote into a free slot is gone when the slot's next worker starts: its honest
// counts are kept, not dropped as its own garbage.
TEST_F(StatsTrustTest, GarbageInAFreeSlotIsNotBlamedOnItsNextWorker) {
  ProxyCounters* c = stats_->proxy_counters(6, "web");
  stat_add(c->accepted, 3);
  stat_add(c->handled, 500);  // by a worker of another slot
  stat_add(stats_->server_counters(6, "app", "h:1")->active, 9);
  stats_->worker_started(6, 106, 1, 0);
  stat_add(c->accepted, 2);
  stat_add(c->handled, 2);
  EXPECT_EQ(stats_->fold(6), 0u);
  const Snapshot s = stats_->snapshot(0);
  EXPECT_EQ(s.proxies[0].accepted, 2u);
  EXPECT_EQ(s.proxies[0].handled, 2u);
}

// The same at an index not registered yet, in a free slot and in a live one: the name
// registered there later finds it zeroed.
TEST_F(StatsTrustTest, GarbageAtAnIndexNotRegisteredYetIsNotBlamedOnAnyWorker) {
  stats_->worker_started(7, 107, 1, 0);  // live
  for (const std::size_t slot : {6u, 7u}) {
    ProxyCounters* next = stats_->proxy_counters(slot, "web") + 1;  // index 1: no name yet
    stat_add(next->handled, 500);
    ServerCounters* next_server = stats_->server_counters(slot, "app", "h:1") + 1;
    stat_add(next_server->active, 9);
  }
  stats_->worker_started(6, 106, 1, 0);
  ASSERT_EQ(stats_->register_proxy("db"), 1u);
  ASSERT_EQ(stats_->register_server("app", "h:2"), 1u);
  for (const std::size_t slot : {6u, 7u}) {
    stat_add(stats_->proxy_counters(slot, "db")->accepted, 2);
    stat_add(stats_->proxy_counters(slot, "db")->handled, 2);
    stat_add(stats_->server_counters(slot, "app", "h:2")->sessions, 3);
    EXPECT_EQ(stats_->fold(slot), 0u) << "slot " << slot;
  }
  const Snapshot s = stats_->snapshot(0);
  ASSERT_EQ(s.proxies.size(), 2u);
  EXPECT_EQ(s.proxies[1].accepted, 4u);
  EXPECT_EQ(s.proxies[1].handled, 4u);
  EXPECT_EQ(s.upstreams.at(0).servers.at(1).sessions, 6u);
}

// A health word written at an index before a server is registered there (the words are the
// workers' to write) must not show that server checked and down.
TEST_F(StatsTrustTest, AHealthWordWrittenBeforeItsServerIsRegisteredIsNotShown) {
  stats_->set_generation(1);
  stats_->set_health(0, 1, false, false, 1000);  // a real verdict, to copy its shape
  auto* words = static_cast<std::atomic<std::uint64_t>*>(
      const_cast<void*>(stats_->counters_segment().data));  // health[] opens the segment
  words[1].store(words[0].load());
  conf::Config cfg;
  conf::Upstream app;
  app.name = "app";
  app.health_check.emplace();
  for (const char* address : {"h:1", "h:2"}) {
    conf::Server v;
    v.address.text = address;
    app.servers.push_back(v);
  }
  cfg.upstreams.push_back(app);
  ASSERT_EQ(stats_->register_config(cfg), 0u);
  ASSERT_EQ(stats_->server_index("app", "h:2"), 1u);
  const Snapshot s = stats_->snapshot(0);
  EXPECT_EQ(s.upstreams.at(0).servers.at(0).health, CheckResult::failed);
  EXPECT_EQ(s.upstreams.at(0).servers.at(1).health, CheckResult::none);
}

std::atomic<bool> g_counting{false};
std::atomic<int> g_allocations{0};

// The master folds from its loop, noexcept: an allocation failing there would end it.
TEST_F(StatsTrustTest, TheFoldAllocatesNothing) {
  for (std::size_t i = 0; i < 40; ++i) stats_->register_proxy("p" + std::to_string(i));
  for (std::size_t i = 0; i < 40; ++i) stats_->register_server("app", "h:" + std::to_string(i));
  stats_->worker_started(2, 102, 1, 0);
  stat_add(stats_->proxy_counters(2, "web")->accepted, 4);
  g_allocations = 0;
  g_counting = true;
  const std::size_t wrong = stats_->fold(2);
  g_counting = false;
  EXPECT_EQ(wrong, 0u);
  EXPECT_EQ(g_allocations, 0);
  EXPECT_EQ(stats_->snapshot(0).proxies[0].accepted, 4u);
}

}  // namespace
}  // namespace ferry::worker

// Counts allocations while g_counting is set (TheFoldAllocatesNothing). Every plain form is
// replaced, so that whatever allocates with one frees with another of the same family.
namespace {
void* counted_malloc(std::size_t size) noexcept {
  if (ferry::worker::g_counting) ++ferry::worker::g_allocations;
  return std::malloc(size == 0 ? 1 : size);
}
}  // namespace
void* operator new(std::size_t size) {
  if (void* p = counted_malloc(size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return ::operator new(size); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  return counted_malloc(size);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  return counted_malloc(size);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
