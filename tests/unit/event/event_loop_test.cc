// Tests of event/event_loop: stale-event detection, timers driven by the loop, epoll_wait's
// timeout, the ADD/MOD registration rule, posted events.
#include "event/event_loop.h"

#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/loop_helpers.h"

namespace ferry::event {
namespace {

using std::chrono::milliseconds;
using test::run_until;
using test::socket_pair;

class EventLoopTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(loop.init({.connections = 8, .epoll_events = 64})); }
  EventLoop loop;
};

// Shared state of the stale-event scenario.
struct StaleScenario {
  EventLoop* loop = nullptr;
  Connection* x = nullptr;
  Connection* y = nullptr;
  UniqueFd z_fd;
  Connection* z = nullptr;
  int old_owner_calls = 0;
  int new_owner_calls = 0;
  bool reused_same_entry = false;
};
StaleScenario* scenario = nullptr;

void new_owner_read(Event& ev) {
  ++scenario->new_owner_calls;
  ev.ready = false;
}

// Whichever of x and y runs first closes the other and hands its entry to z at once.
void old_owner_read(Event& ev) {
  auto* self = static_cast<Connection*>(ev.data);
  ++scenario->old_owner_calls;
  Connection* other = self == scenario->x ? scenario->y : scenario->x;
  if (scenario->z != nullptr) return;
  Connection* freed = other;
  scenario->loop->close_connection(*other);
  scenario->z = scenario->loop->get_connection(std::move(scenario->z_fd));
  ASSERT_NE(scenario->z, nullptr);
  scenario->reused_same_entry = scenario->z == freed;
  scenario->z->read.handler = new_owner_read;
  scenario->z->write.handler = [](Event&) {};
  ASSERT_FALSE(scenario->loop->add_connection(*scenario->z));
}

TEST_F(EventLoopTest, StaleEventForAReusedConnectionIsDropped) {
  StaleScenario s;
  scenario = &s;
  s.loop = &loop;
  auto [x_fd, x_peer] = socket_pair();
  auto [y_fd, y_peer] = socket_pair();
  auto [z_fd, z_peer] = socket_pair();
  s.z_fd = std::move(z_fd);

  s.x = loop.get_connection(std::move(x_fd));
  s.y = loop.get_connection(std::move(y_fd));
  ASSERT_NE(s.x, nullptr);
  ASSERT_NE(s.y, nullptr);
  s.x->read.handler = s.y->read.handler = old_owner_read;
  s.x->write.handler = s.y->write.handler = [](Event&) {};
  ASSERT_FALSE(loop.add_connection(*s.x));
  ASSERT_FALSE(loop.add_connection(*s.y));
  // The test writes x's peer first, so x's report comes first and y's entry is the one reused.
  const std::uint32_t y_generation_before = s.y->generation;

  // Both readable before the wait, so both reports arrive in one epoll_wait batch.
  ASSERT_EQ(::write(x_peer.get(), "x", 1), 1);
  ASSERT_EQ(::write(y_peer.get(), "y", 1), 1);
  ASSERT_EQ(::write(z_peer.get(), "z", 1), 1);
  loop.add_timer(s.x->write, milliseconds(1000));  // keeps the wait bounded
  loop.process_events_and_timers();

  ASSERT_NE(s.z, nullptr);
  EXPECT_TRUE(s.reused_same_entry) << "the free list is LIFO: the closed entry is reused first";
  EXPECT_EQ(s.old_owner_calls, 1) << "the closed connection's report must not reach any handler";
  EXPECT_EQ(s.new_owner_calls, 0) << "the old owner's report reached the new owner";
  EXPECT_NE(s.z->generation, y_generation_before);

  // The new owner's own readiness is delivered in a later iteration.
  EXPECT_TRUE(run_until(loop, [&] { return s.new_owner_calls == 1; }));
  scenario = nullptr;
}

TEST_F(EventLoopTest, ReuseAdvancesTheGeneration) {
  auto [a, a_peer] = socket_pair();
  Connection* c = loop.get_connection(std::move(a));
  ASSERT_NE(c, nullptr);
  const std::uint32_t before = c->generation;
  loop.close_connection(*c);
  auto [b, b_peer] = socket_pair();
  Connection* again = loop.get_connection(std::move(b));
  ASSERT_EQ(again, c);
  EXPECT_EQ(again->generation, before + 1);
}

// Shared state of the double-reuse scenario.
struct DoubleReuse {
  EventLoop* loop = nullptr;
  Connection* x = nullptr;
  Connection* y = nullptr;
  UniqueFd first_fd;   // the client that takes y's entry and is refused at once
  UniqueFd second_fd;  // the client that takes it next and stays
  Connection* second = nullptr;
  std::uint32_t y_generation = 0;
  int x_calls = 0;
  int y_calls = 0;
  int second_calls = 0;
  bool second_saw_rdhup = false;
};
DoubleReuse* reuse = nullptr;

// x's report comes first: it closes y, whose hang-up report waits later in the batch, and hands
// y's entry out twice, as an accept loop with multi_accept does when it refuses a client
// synchronously and accepts the next: a one-bit tag would be back to y's value.
void reuser_read(Event& ev) {
  ev.ready = false;
  ++reuse->x_calls;
  if (reuse->second != nullptr) return;
  EventLoop& loop = *reuse->loop;
  loop.close_connection(*reuse->y);
  Connection* first = loop.get_connection(std::move(reuse->first_fd));
  ASSERT_EQ(first, reuse->y) << "the free list is LIFO: the closed entry is reused first";
  first->read.handler = first->write.handler = [](Event&) {};
  ASSERT_FALSE(loop.add_connection(*first));
  loop.close_connection(*first);  // refused: closed at once
  reuse->second = loop.get_connection(std::move(reuse->second_fd));
  ASSERT_EQ(reuse->second, reuse->y);
  EXPECT_EQ(reuse->second->generation, reuse->y_generation + 2);
  reuse->second->read.handler = [](Event& e) {
    ++reuse->second_calls;
    reuse->second_saw_rdhup = reuse->second_saw_rdhup || e.pending_eof;
    e.ready = false;
  };
  reuse->second->write.handler = [](Event&) {};
  ASSERT_FALSE(loop.add_connection(*reuse->second));
}

TEST_F(EventLoopTest, AStaleHangUpIsDroppedAfterTheEntryIsReusedTwiceInOneBatch) {
  DoubleReuse s;
  reuse = &s;
  s.loop = &loop;
  auto [x_fd, x_peer] = socket_pair();
  auto [y_fd, y_peer] = socket_pair();
  auto [first_fd, first_peer] = socket_pair();
  auto [second_fd, second_peer] = socket_pair();
  s.first_fd = std::move(first_fd);
  s.second_fd = std::move(second_fd);
  s.x = loop.get_connection(std::move(x_fd));
  s.y = loop.get_connection(std::move(y_fd));
  ASSERT_NE(s.x, nullptr);
  ASSERT_NE(s.y, nullptr);
  s.y_generation = s.y->generation;
  s.x->read.handler = reuser_read;
  s.y->read.handler = [](Event& ev) {
    ++reuse->y_calls;
    ev.ready = false;
  };
  s.x->write.handler = s.y->write.handler = [](Event&) {};
  // Registered with nothing to read yet, so that each report comes when its event happens:
  // x's data first, then y's hang-up, both before the wait, so both in one batch.
  ASSERT_FALSE(loop.add_connection(*s.x));
  ASSERT_FALSE(loop.add_connection(*s.y));
  ASSERT_EQ(::write(x_peer.get(), "x", 1), 1);
  y_peer.reset();                                  // EPOLLIN | EPOLLRDHUP for y
  loop.add_timer(s.x->write, milliseconds(1000));  // keeps the wait bounded
  loop.process_events_and_timers();

  ASSERT_NE(s.second, nullptr) << "x's report must come first in the batch";
  EXPECT_EQ(s.x_calls, 1);
  EXPECT_EQ(s.y_calls, 0) << "y was closed before its report was dispatched";
  EXPECT_EQ(s.second_calls, 0) << "y's stale hang-up reached the entry's second new owner";
  EXPECT_FALSE(s.second->read.pending_eof) << "a stale EPOLLRDHUP would end the new session";

  // The new owner's own reports still arrive, without a hang-up.
  ASSERT_EQ(::write(second_peer.get(), "2", 1), 1);
  EXPECT_TRUE(run_until(loop, [&] { return s.second_calls == 1; }));
  EXPECT_FALSE(s.second_saw_rdhup);
  loop.del_timer(s.x->write);
  reuse = nullptr;
}

TEST_F(EventLoopTest, EpollWaitTimeoutFollowsTheNearestTimer) {
  static std::vector<std::string>* order;
  std::vector<std::string> fired;
  order = &fired;
  Event late;
  Event early;
  late.data = const_cast<char*>("late");
  early.data = const_cast<char*>("early");
  late.handler =
      early.handler = [](Event& ev) { order->emplace_back(static_cast<const char*>(ev.data)); };

  loop.add_timer(late, milliseconds(400));
  loop.add_timer(early, milliseconds(120));
  const auto start = std::chrono::steady_clock::now();
  loop.process_events_and_timers();
  const auto waited = std::chrono::steady_clock::now() - start;

  EXPECT_EQ(loop.last_wait_timeout(), 120);
  EXPECT_GE(waited, milliseconds(110)) << "epoll_wait returned before the nearest timer";
  EXPECT_EQ(fired, std::vector<std::string>{"early"});

  loop.process_events_and_timers();
  EXPECT_LE(loop.last_wait_timeout(), 400 - 110);
  EXPECT_GE(loop.last_wait_timeout(), 1);
  EXPECT_EQ(fired, (std::vector<std::string>{"early", "late"}));
}

TEST_F(EventLoopTest, TimersFireThroughTheLoopInDeadlineOrder) {
  static std::vector<int>* order;
  std::vector<int> fired;
  order = &fired;
  Event t[3];
  const int delays[3] = {60, 20, 40};
  for (int i = 0; i < 3; ++i) {
    t[i].data = reinterpret_cast<void*>(static_cast<std::intptr_t>(delays[i]));
    t[i].handler = [](Event& ev) {
      order->push_back(static_cast<int>(reinterpret_cast<std::intptr_t>(ev.data)));
    };
    loop.add_timer(t[i], milliseconds(delays[i]));
  }
  ASSERT_TRUE(run_until(loop, [&] { return fired.size() == 3; }));
  EXPECT_EQ(fired, (std::vector<int>{20, 40, 60}));
  EXPECT_TRUE(loop.timers().empty());
}

TEST_F(EventLoopTest, DeletedTimerDoesNotFireThroughTheLoop) {
  static int fired;
  fired = 0;
  Event doomed;
  Event witness;
  doomed.handler = [](Event&) { fired += 100; };
  witness.handler = [](Event&) { fired += 1; };
  loop.add_timer(doomed, milliseconds(10));
  loop.add_timer(witness, milliseconds(30));
  loop.del_timer(doomed);
  ASSERT_TRUE(run_until(loop, [&] { return fired != 0; }));
  EXPECT_EQ(fired, 1);
}

// Registering the read and then the write side of one fd must use EPOLL_CTL_MOD the second
// time (an ADD would fail with EEXIST); removing one side must keep the other.
TEST_F(EventLoopTest, SecondDirectionIsAddedWithModAndDeletingOneKeepsTheOther) {
  auto [fd, peer] = socket_pair();
  Connection* c = loop.get_connection(std::move(fd));
  ASSERT_NE(c, nullptr);
  static int reads;
  static int writes;
  reads = writes = 0;
  c->read.handler = [](Event& ev) {
    ++reads;
    char buf[16];
    while (::read(static_cast<Connection*>(ev.data)->fd.get(), buf, sizeof buf) > 0) {
    }
  };
  c->write.handler = [](Event&) { ++writes; };

  ASSERT_FALSE(loop.add_event(c->read, EventKind::read));
  ASSERT_FALSE(loop.add_event(c->write, EventKind::write));
  EXPECT_TRUE(c->read.active);
  EXPECT_TRUE(c->write.active);
  ASSERT_TRUE(run_until(loop, [&] { return writes >= 1; }));

  ASSERT_EQ(::write(peer.get(), "a", 1), 1);
  ASSERT_TRUE(run_until(loop, [&] { return reads == 1; }));

  ASSERT_FALSE(loop.del_event(c->read, EventKind::read));
  EXPECT_FALSE(c->read.active);
  EXPECT_TRUE(c->write.active);
  ASSERT_EQ(::write(peer.get(), "b", 1), 1);
  run_until(
      loop, [] { return false; }, milliseconds(120));
  EXPECT_EQ(reads, 1) << "a deleted read event still fired";

  // Re-adding read is a MOD again (write is still registered), and the pending byte shows up.
  ASSERT_FALSE(loop.add_event(c->read, EventKind::read));
  ASSERT_TRUE(run_until(loop, [&] { return reads == 2; }));
  loop.close_connection(*c);
}

// Deleting one direction re-registers the other with the mode it had: a level-triggered read
// keeps being reported while data is waiting.
TEST_F(EventLoopTest, DeletingOneDirectionKeepsTheOthersTriggerMode) {
  auto [fd, peer] = socket_pair();
  Connection* c = loop.get_connection(std::move(fd));
  ASSERT_NE(c, nullptr);
  static int reads;
  reads = 0;
  c->read.handler = [](Event&) { ++reads; };  // never reads: the data stays
  c->write.handler = [](Event&) {};
  ASSERT_FALSE(loop.add_event(c->read, EventKind::read, EventLoop::kLevel));
  ASSERT_FALSE(loop.add_event(c->write, EventKind::write));
  ASSERT_FALSE(loop.del_event(c->write, EventKind::write));
  ASSERT_EQ(::write(peer.get(), "x", 1), 1);
  Event guard;
  guard.handler = [](Event&) {};
  for (int i = 0; i < 3; ++i) {
    loop.add_timer(guard, milliseconds(100));
    loop.process_events_and_timers();
  }
  loop.del_timer(guard);
  EXPECT_EQ(reads, 3) << "the read side turned edge-triggered";
  loop.close_connection(*c);
}

TEST_F(EventLoopTest, PostedEventsRunAfterTheWaitInPostingOrder) {
  static std::vector<int>* order;
  std::vector<int> ran;
  order = &ran;
  Event a;
  Event b;
  Event c;
  a.data = reinterpret_cast<void*>(1);
  b.data = reinterpret_cast<void*>(2);
  c.data = reinterpret_cast<void*>(3);
  for (Event* e : {&a, &b, &c}) {
    e->handler = [](Event& ev) {
      order->push_back(static_cast<int>(reinterpret_cast<std::intptr_t>(ev.data)));
    };
  }
  loop.post(b);
  loop.post(a);
  loop.post(c);
  loop.post(a);  // already posted: stays where it is
  EventLoop::delete_posted(c);
  Event guard;
  guard.handler = [](Event&) {};
  loop.add_timer(guard, milliseconds(1));
  loop.process_events_and_timers();
  EXPECT_EQ(ran, (std::vector<int>{2, 1}));
  EXPECT_FALSE(a.posted);
  EXPECT_FALSE(c.posted);
}

TEST_F(EventLoopTest, UsingTheLoopOffItsThreadAborts) {
#ifdef NDEBUG
  GTEST_SKIP() << "thread assertions are compiled out of release builds";
#endif
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        std::thread other([this] {
          Event ev;
          ev.handler = [](Event&) {};
          loop.add_timer(ev, milliseconds(10));
        });
        other.join();
      },
      "event loop used off its thread");
}

}  // namespace
}  // namespace ferry::event
