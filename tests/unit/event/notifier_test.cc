// Tests of event/notifier: cross-thread wake-ups add up, a signal handler can notify, several
// notifiers share a loop, and del/add/set_handler do what they say.
#include "event/notifier.h"

#include <signal.h>

#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "event/event_loop.h"
#include "tests/support/loop_helpers.h"

namespace ferry::event {
namespace {

using std::chrono::milliseconds;

struct Tally {
  std::uint64_t drained = 0;
  int calls = 0;
  std::thread::id thread;
};

void count(Notifier& n, std::uint64_t drained) {
  auto& t = *static_cast<Tally*>(n.data());
  t.drained += drained;
  ++t.calls;
  t.thread = std::this_thread::get_id();
}

class NotifierTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(loop.init({.connections = 4, .epoll_events = 16})); }
  EventLoop loop;
};

TEST_F(NotifierTest, EightThreadsTimesTenThousandNotifiesAddUp) {
  Tally tally;
  Notifier n;
  ASSERT_FALSE(n.create(loop, count, &tally, true));
  constexpr int kThreads = 8;
  constexpr int kEach = 10'000;
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      while (!go.load()) std::this_thread::yield();
      for (int i = 0; i < kEach; ++i) n.notify();
    });
  }
  go = true;
  const bool all = test::run_until(
      loop, [&] { return tally.drained >= kThreads * kEach; }, std::chrono::seconds(20));
  for (auto& t : threads) t.join();
  ASSERT_TRUE(all) << "drained " << tally.drained;
  // Nothing more is pending: one more bounded iteration must not report extra wake-ups.
  test::run_until(
      loop, [] { return false; }, milliseconds(60));
  EXPECT_EQ(tally.drained, static_cast<std::uint64_t>(kThreads * kEach));
  EXPECT_GE(tally.calls, 1);
  EXPECT_LE(tally.calls, kThreads * kEach);
  EXPECT_EQ(tally.thread, std::this_thread::get_id()) << "the handler ran off the loop thread";
}

Notifier* signal_target = nullptr;
void on_signal(int) {
  errno = 4242;  // notify() must leave errno as the interrupted code had it
  signal_target->notify();
  if (errno != 4242) signal_target = nullptr;
}

TEST_F(NotifierTest, NotifyFromASignalHandlerWakesTheLoop) {
  Tally tally;
  Notifier n;
  ASSERT_FALSE(n.create(loop, count, &tally, true));
  signal_target = &n;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old {};
  ASSERT_EQ(::sigaction(SIGUSR1, &sa, &old), 0);
  ASSERT_EQ(::kill(::getpid(), SIGUSR1), 0);
  ASSERT_EQ(::kill(::getpid(), SIGUSR1), 0);
  const bool woke = test::run_until(loop, [&] { return tally.drained == 2; });
  ::sigaction(SIGUSR1, &old, nullptr);
  EXPECT_TRUE(woke) << "drained " << tally.drained;
  EXPECT_NE(signal_target, nullptr) << "notify() changed errno inside the signal handler";
}

// A failing write (here: the eventfd is closed) must not change errno either: the code a signal
// handler interrupted may be about to read it.
TEST_F(NotifierTest, NotifyPreservesErrnoEvenWhenTheWriteFails) {
  Tally tally;
  Notifier n;
  ASSERT_FALSE(n.create(loop, count, &tally, true));
  n.close();
  errno = 4242;
  n.notify();
  EXPECT_EQ(errno, 4242);
}

TEST_F(NotifierTest, ManyNotifiersOnOneLoopEachRunTheirOwnHandler) {
  constexpr int kCount = 16;
  Tally tallies[kCount];
  Notifier notifiers[kCount];
  for (int i = 0; i < kCount; ++i)
    ASSERT_FALSE(notifiers[i].create(loop, count, &tallies[i], true));
  for (int i = 0; i < kCount; ++i) {
    for (int k = 0; k <= i; ++k) notifiers[i].notify();
  }
  ASSERT_TRUE(test::run_until(loop, [&] {
    for (int i = 0; i < kCount; ++i) {
      if (tallies[i].drained != static_cast<std::uint64_t>(i + 1)) return false;
    }
    return true;
  }));
}

TEST_F(NotifierTest, DelStopsWakeUpsAndAddDeliversWhatCameMeanwhile) {
  Tally tally;
  Notifier n;
  ASSERT_FALSE(n.create(loop, count, &tally, false));
  EXPECT_FALSE(n.active());
  n.notify();
  test::run_until(
      loop, [] { return false; }, milliseconds(60));
  EXPECT_EQ(tally.calls, 0) << "a notifier created without start was registered";

  ASSERT_FALSE(n.add());
  ASSERT_TRUE(test::run_until(loop, [&] { return tally.drained == 1; }));

  ASSERT_FALSE(n.del());
  n.notify();
  test::run_until(
      loop, [] { return false; }, milliseconds(60));
  EXPECT_EQ(tally.drained, 1U);

  ASSERT_FALSE(n.add());
  ASSERT_TRUE(test::run_until(loop, [&] { return tally.drained == 2; }));
}

TEST_F(NotifierTest, SetHandlerSwitchesTheHandler) {
  Tally tally;
  Notifier n;
  ASSERT_FALSE(n.create(loop, count, &tally, true));
  static int other_calls;
  other_calls = 0;
  n.set_handler([](Notifier&, std::uint64_t) { ++other_calls; });
  n.notify();
  ASSERT_TRUE(test::run_until(loop, [&] { return other_calls == 1; }));
  EXPECT_EQ(tally.calls, 0);
  n.close();
  EXPECT_FALSE(n.active());
}

}  // namespace
}  // namespace ferry::event
