// Tests of event/timer_tree: deadline order, deletion, re-arming, the epoll timeout it yields.
#include "event/timer_tree.h"

#include <vector>

#include <gtest/gtest.h>

#include "event/event.h"

namespace ferry::event {
namespace {

using std::chrono::milliseconds;

struct Recorder {
  std::vector<int> fired;
};

struct Timed {
  Event ev;
  int id = 0;
  Recorder* rec = nullptr;
};

void record(Event& ev) {
  auto& t = *static_cast<Timed*>(ev.data);
  EXPECT_TRUE(ev.timedout);
  EXPECT_FALSE(ev.timer_set);
  t.rec->fired.push_back(t.id);
}

class TimerTreeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 5; ++i) {
      timed[i].id = i;
      timed[i].rec = &rec;
      timed[i].ev.data = &timed[i];
      timed[i].ev.handler = record;
    }
  }
  TimePoint at(int ms) const { return base + milliseconds(ms); }

  TimerTree tree;
  Recorder rec;
  Timed timed[5];
  TimePoint base{milliseconds(1'000'000)};
};

TEST_F(TimerTreeTest, FiresInDeadlineOrderRegardlessOfInsertionOrder) {
  tree.add(timed[0].ev, at(50));
  tree.add(timed[1].ev, at(10));
  tree.add(timed[2].ev, at(30));
  tree.add(timed[3].ev, at(20));
  tree.add(timed[4].ev, at(40));
  tree.expire(at(100));
  EXPECT_EQ(rec.fired, (std::vector<int>{1, 3, 2, 4, 0}));
  EXPECT_TRUE(tree.empty());
}

TEST_F(TimerTreeTest, OnlyDueTimersFire) {
  tree.add(timed[0].ev, at(10));
  tree.add(timed[1].ev, at(20));
  tree.expire(at(15));
  EXPECT_EQ(rec.fired, std::vector<int>{0});
  EXPECT_TRUE(timed[1].ev.timer_set);
  EXPECT_EQ(tree.size(), 1U);
}

TEST_F(TimerTreeTest, EqualDeadlinesFireInInsertionOrder) {
  for (int i : {3, 1, 4, 0, 2}) tree.add(timed[i].ev, at(10));
  tree.expire(at(10));
  EXPECT_EQ(rec.fired, (std::vector<int>{3, 1, 4, 0, 2}));
}

TEST_F(TimerTreeTest, DeletedTimerNeverFires) {
  tree.add(timed[0].ev, at(10));
  tree.add(timed[1].ev, at(20));
  tree.del(timed[0].ev);
  EXPECT_FALSE(timed[0].ev.timer_set);
  tree.expire(at(100));
  EXPECT_EQ(rec.fired, std::vector<int>{1});
}

TEST_F(TimerTreeTest, DeletingAnUnsetTimerIsANoOp) {
  tree.del(timed[0].ev);
  tree.add(timed[1].ev, at(10));
  tree.del(timed[0].ev);
  EXPECT_EQ(tree.size(), 1U);
  tree.expire(at(10));
  EXPECT_EQ(rec.fired, std::vector<int>{1});
}

TEST_F(TimerTreeTest, ReArmingMovesTheTimer) {
  tree.add(timed[0].ev, at(10));
  tree.add(timed[1].ev, at(20));
  tree.add(timed[0].ev, at(30));
  EXPECT_EQ(tree.size(), 2U);
  tree.expire(at(25));
  EXPECT_EQ(rec.fired, std::vector<int>{1});
  tree.expire(at(30));
  EXPECT_EQ(rec.fired, (std::vector<int>{1, 0}));
}

TEST_F(TimerTreeTest, HandlerMayArmAnotherTimerThatIsAlreadyDue) {
  struct Chain {
    Event ev;
    TimerTree* tree;
    Event* next;
    TimePoint when;
  };
  Chain chain{{}, &tree, &timed[1].ev, at(5)};
  chain.ev.data = &chain;
  chain.ev.handler = [](Event& ev) {
    auto& c = *static_cast<Chain*>(ev.data);
    c.tree->add(*c.next, c.when);
  };
  tree.add(chain.ev, at(1));
  tree.expire(at(10));
  EXPECT_EQ(rec.fired, std::vector<int>{1});
}

TEST_F(TimerTreeTest, NearestAndTimeoutFollowTheEarliestDeadline) {
  EXPECT_FALSE(tree.nearest().has_value());
  EXPECT_EQ(tree.timeout_ms(at(0)), -1);
  tree.add(timed[0].ev, at(250));
  tree.add(timed[1].ev, at(120));
  EXPECT_EQ(tree.nearest(), at(120));
  EXPECT_EQ(tree.timeout_ms(at(20)), 100);
  EXPECT_EQ(tree.timeout_ms(at(500)), 0);
  tree.del(timed[1].ev);
  EXPECT_EQ(tree.timeout_ms(at(50)), 200);
}

TEST_F(TimerTreeTest, ReusesTheEventsOwnNodeAfterTheFirstArm) {
  tree.add(timed[0].ev, at(10));
  tree.del(timed[0].ev);
  ASSERT_FALSE(timed[0].ev.timer.spare.empty());
  tree.add(timed[0].ev, at(20));
  EXPECT_TRUE(timed[0].ev.timer.spare.empty());  // the spare node went back into the tree
  tree.expire(at(20));
  EXPECT_EQ(rec.fired, std::vector<int>{0});
}

}  // namespace
}  // namespace ferry::event
