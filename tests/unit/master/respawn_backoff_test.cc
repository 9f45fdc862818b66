// Tests of master/respawn_backoff: the delay before a dead worker is replaced.
#include "master/respawn_backoff.h"

#include <gtest/gtest.h>

namespace ferry::master {
namespace {

using event::Msec;

TEST(RespawnBackoffTest, AWorkerThatLivedIsReplacedAtOnce) {
  RespawnBackoff b;
  EXPECT_EQ(b.after_death(kQuickDeath), Msec{0});
  EXPECT_EQ(b.after_death(Msec{60'000}), Msec{0});
  EXPECT_EQ(b.quick_deaths(), 0);
}

TEST(RespawnBackoffTest, QuickDeathsInARowDoubleTheDelayUpToTheCap) {
  RespawnBackoff b;
  const Msec expected[] = {Msec{100},  Msec{200},  Msec{400},   Msec{800},   Msec{1600},
                           Msec{3200}, Msec{6400}, kMaxBackoff, kMaxBackoff, kMaxBackoff};
  for (const Msec want : expected) EXPECT_EQ(b.after_death(Msec{10}), want);
  EXPECT_EQ(b.quick_deaths(), 10);
}

TEST(RespawnBackoffTest, AWorkerThatLivedStartsTheCountAgain) {
  RespawnBackoff b;
  (void)b.after_death(Msec{0});
  (void)b.after_death(Msec{0});
  EXPECT_EQ(b.after_death(kQuickDeath - Msec{1}), Msec{400});
  EXPECT_EQ(b.after_death(kQuickDeath), Msec{0});
  EXPECT_EQ(b.after_death(Msec{0}), Msec{100});
}

}  // namespace
}  // namespace ferry::master
