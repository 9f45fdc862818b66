// Tests of event/accept_mutex across real forked processes sharing one mapping.
#include "event/accept_mutex.h"

#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <new>

#include <gtest/gtest.h>

#include "event/shared_memory.h"

namespace ferry::event {
namespace {

struct Shared {
  AcceptMutexWord word;
  std::atomic<int> inside{0};
  std::atomic<int> overlaps{0};
  std::atomic<long> counter{0};  // updated by load + store, so only exclusion keeps it exact
};

constexpr int kRounds = 20'000;

void contend(Shared& s) {
  AcceptMutex m(s.word, ::getpid());
  for (int i = 0; i < kRounds; ++i) {
    while (!m.try_lock()) sched_yield();
    if (s.inside.fetch_add(1, std::memory_order_relaxed) != 0) s.overlaps.fetch_add(1);
    const long v = s.counter.load(std::memory_order_relaxed);
    if (i % 64 == 0) sched_yield();  // widen the window a broken lock would show in
    s.counter.store(v + 1, std::memory_order_relaxed);
    s.inside.fetch_sub(1, std::memory_order_relaxed);
    m.unlock();
  }
}

TEST(AcceptMutexTest, ExcludesAcrossTwoForkedProcesses) {
  SharedMemory shm;
  ASSERT_FALSE(shm.create(sizeof(Shared)));
  auto* s = new (shm.data()) Shared;

  pid_t children[2];
  for (pid_t& child : children) {
    child = ::fork();
    ASSERT_NE(child, -1);
    if (child == 0) {
      contend(*s);
      ::_exit(0);
    }
  }
  for (pid_t child : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  EXPECT_EQ(s->overlaps.load(), 0);
  EXPECT_EQ(s->counter.load(), 2L * kRounds);
  EXPECT_EQ(s->word.owner.load(), 0U);
}

TEST(AcceptMutexTest, HeldLockRefusesOthersAndOnlyTheHolderOrForceUnlockFreesIt) {
  SharedMemory shm;
  ASSERT_FALSE(shm.create(sizeof(AcceptMutexWord)));
  auto* word = new (shm.data()) AcceptMutexWord;
  AcceptMutex a(*word, 1001);
  AcceptMutex b(*word, 1002);
  ASSERT_TRUE(a.try_lock());
  EXPECT_EQ(a.holder(), 1001);
  EXPECT_FALSE(b.try_lock());
  b.unlock();  // not b's: no effect
  EXPECT_EQ(a.holder(), 1001);
  // The master frees the lock of a worker that died holding it.
  EXPECT_TRUE(b.force_unlock(1001));
  EXPECT_FALSE(b.force_unlock(1001));
  EXPECT_TRUE(b.try_lock());
  b.unlock();
  EXPECT_EQ(a.holder(), 0);
}

}  // namespace
}  // namespace ferry::event
