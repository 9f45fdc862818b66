// Tests of event/thread_pool: work runs off the loop, completions on it; a full queue is an
// error returned at once; a task cannot be queued twice.
#include "event/thread_pool.h"

#include <atomic>
#include <latch>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "event/event_loop.h"
#include "tests/support/loop_helpers.h"

namespace ferry::event {
namespace {

struct Batch {
  std::thread::id loop_thread;
  std::atomic<int> ran_on_loop_thread{0};
  int completed = 0;
  int completed_off_loop = 0;
};

struct Job {
  ThreadTask task;
  Batch* run = nullptr;
  std::uint64_t input = 0;
  std::uint64_t output = 0;
};

void square(ThreadTask& t) {
  auto& job = *static_cast<Job*>(t.ctx);
  if (std::this_thread::get_id() == job.run->loop_thread) ++job.run->ran_on_loop_thread;
  job.output = job.input * job.input;
}

void completed(Event& ev) {
  auto& job = *static_cast<Job*>(ev.data);
  if (std::this_thread::get_id() != job.run->loop_thread) ++job.run->completed_off_loop;
  ++job.run->completed;
}

TEST(ThreadPoolTest, HundredThousandTasksCompleteOnTheLoopThread) {
  EventLoop loop;
  ASSERT_FALSE(loop.init({.connections = 4, .epoll_events = 16}));
  ThreadPool pool;
  constexpr int kTasks = 100'000;
  ASSERT_FALSE(pool.init(loop, "test-pool", 4, kTasks));

  Batch run;
  run.loop_thread = std::this_thread::get_id();
  auto jobs = std::make_unique<Job[]>(kTasks);
  for (int i = 0; i < kTasks; ++i) {
    Job& job = jobs[i];
    job.run = &run;
    job.input = static_cast<std::uint64_t>(i);
    job.task.work = square;
    job.task.ctx = &job;
    job.task.event.handler = completed;
    job.task.event.data = &job;
    ASSERT_FALSE(pool.post(job.task)) << "task " << i;
  }
  ASSERT_TRUE(test::run_until(
      loop, [&] { return run.completed == kTasks; }, std::chrono::seconds(60)))
      << run.completed << " of " << kTasks;
  EXPECT_EQ(run.completed_off_loop, 0) << "completion handlers must run on the loop thread";
  EXPECT_EQ(run.ran_on_loop_thread.load(), 0) << "work must run on the pool's threads";
  for (int i = 0; i < kTasks; ++i) {
    ASSERT_EQ(jobs[i].output, static_cast<std::uint64_t>(i) * i);
    ASSERT_FALSE(jobs[i].task.event.active);
  }
}

TEST(ThreadPoolTest, AFullQueueIsReportedNotWaitedFor) {
  EventLoop loop;
  ASSERT_FALSE(loop.init({.connections = 4, .epoll_events = 16}));
  ThreadPool pool;
  ASSERT_FALSE(pool.init(loop, "tiny", 1, 2));

  // Hold the only thread so queued tasks stay queued.
  static std::latch* started;
  static std::latch* release;
  std::latch started_latch(1);
  std::latch release_latch(1);
  started = &started_latch;
  release = &release_latch;
  static int done;
  done = 0;
  ThreadTask blocker;
  blocker.work = [](ThreadTask&) {
    started->count_down();
    release->wait();
  };
  ThreadTask queued[3];
  for (ThreadTask* t : {&blocker, &queued[0], &queued[1], &queued[2]}) {
    t->event.handler = [](Event&) { ++done; };
    if (t != &blocker) t->work = [](ThreadTask&) {};
  }
  ASSERT_FALSE(pool.post(blocker));
  started_latch.wait();
  ASSERT_FALSE(pool.post(queued[0]));
  ASSERT_FALSE(pool.post(queued[1]));
  EXPECT_EQ(pool.post(queued[2]), std::errc::resource_unavailable_try_again);
  EXPECT_FALSE(queued[2].event.active);
  EXPECT_EQ(pool.post(queued[0]), std::errc::device_or_resource_busy);
  EXPECT_EQ(pool.queued(), 2U);

  release_latch.count_down();
  ASSERT_TRUE(test::run_until(loop, [&] { return done == 3; }));
  // With room again, the refused task goes through.
  ASSERT_FALSE(pool.post(queued[2]));
  ASSERT_TRUE(test::run_until(loop, [&] { return done == 4; }));
}

TEST(ThreadPoolTest, ShutdownDropsQueuedTasksClearsFinishedOnesAndRefusesNewOnes) {
  EventLoop loop;
  ASSERT_FALSE(loop.init({.connections = 4, .epoll_events = 16}));
  ThreadPool pool;
  ASSERT_FALSE(pool.init(loop, "short", 1, 16));
  static std::latch* release;
  std::latch release_latch(1);
  release = &release_latch;
  static std::atomic<int> ran;
  ran = 0;
  static int completions;
  completions = 0;
  ThreadTask finished;
  ThreadTask blocker;
  ThreadTask queued;
  finished.work = [](ThreadTask&) { ++ran; };
  blocker.work = [](ThreadTask&) {
    release->wait();
    ++ran;
  };
  queued.work = [](ThreadTask&) { ++ran; };
  for (ThreadTask* t : {&finished, &blocker, &queued})
    t->event.handler = [](Event&) { ++completions; };

  ASSERT_FALSE(pool.post(finished));
  ASSERT_FALSE(pool.post(blocker));
  ASSERT_FALSE(pool.post(queued));
  // `finished` runs (its completion is never delivered: the loop does not iterate), `blocker`
  // holds the only thread, `queued` waits behind it.
  for (int i = 0; i < 500 && ran.load() < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(ran.load(), 1);
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    release_latch.count_down();
  });
  pool.shutdown();
  releaser.join();
  EXPECT_EQ(ran.load(), 2) << "the queued task must be dropped, the running one finished";
  EXPECT_FALSE(finished.event.active);
  EXPECT_FALSE(blocker.event.active);
  EXPECT_FALSE(queued.event.active);
  EXPECT_EQ(completions, 0) << "no completion handler runs after shutdown";
  EXPECT_EQ(pool.post(queued), std::errc::operation_canceled);
}

}  // namespace
}  // namespace ferry::event
