// Tests of a new master's taking in of the old master's statistics across a binary upgrade
// (worker/stats/stats_inherit.cc), with both tables in this process.
#include <fcntl.h>
#include <unistd.h>

#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "tests/unit/worker/one_proxy_config.h"
#include "worker/stats/stats_table.h"

namespace ferry::worker {
namespace {

// The old table as the new master sees it: the segments passed across the exec, mapped read-only.
std::unique_ptr<StatsTable> passed(const StatsTable& old) {
  const std::string fds = old.pass_to_exec();
  const auto semi = fds.find(';');
  if (semi == std::string::npos) return nullptr;
  // Duplicates: open_passed() owns (and closes) what it is given.
  return StatsTable::open_passed(
      event::UniqueFd(::fcntl(std::stoi(fds.substr(0, semi)), F_DUPFD_CLOEXEC, 3)),
      event::UniqueFd(::fcntl(std::stoi(fds.substr(semi + 1)), F_DUPFD_CLOEXEC, 3)));
}

std::uint64_t accepted_sum(const Snapshot& s) {
  std::uint64_t n = 0;
  for (const auto& p : s.proxies) n += p.accepted;
  return n;
}

// A name the old master reclaims while it drains (a HUP in the rollback window, its registry
// full) reaches us through its "(reclaimed)" totals: what we had taken for the name goes.
TEST(StatsInheritTest, ANameTheOldMasterReclaimsIsNotCountedTwice) {
  auto old = StatsTable::create("1.2.3", 4242, 1000);
  ASSERT_NE(old, nullptr);
  old->set_capacity_for_tests(1, 1);
  ASSERT_EQ(old->register_config(one_proxy("x")), 0u);
  old->worker_started(0, 100, 1, 1000);
  ProxyCounters* x = old->proxy_counters(0, "x");
  ASSERT_NE(x, nullptr);
  stat_add(x->accepted, 5);
  stat_add(x->handled, 5);
  ASSERT_EQ(old->fold(0), 0u);
  auto view = passed(*old);
  ASSERT_NE(view, nullptr);
  auto fresh = StatsTable::create("1.2.4", 4343, 1001);
  ASSERT_NE(fresh, nullptr);
  ASSERT_TRUE(fresh->inherit(*view, false));
  EXPECT_EQ(accepted_sum(fresh->snapshot(1002)), 5u);

  // "x" is in the configuration published last: it stays, and "y" finds no place, this time.
  ASSERT_EQ(old->register_config(one_proxy("y")), 2u);
  ASSERT_EQ(old->register_config(one_proxy("y")), 0u);  // "x" goes to "(reclaimed)"
  ASSERT_EQ(old->proxy_index("x"), std::nullopt);
  ASSERT_TRUE(fresh->inherit(*view, false));
  EXPECT_EQ(accepted_sum(fresh->snapshot(1003)), 5u);
  ASSERT_TRUE(fresh->inherit(*view, true));
  EXPECT_EQ(accepted_sum(fresh->snapshot(1004)), 5u);
}

// An old master whose live worker counted 1000 sessions of proxy "x", and a new master that has
// taken them in once.
class LiveOldWorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    old = StatsTable::create("1.2.3", 4242, 1000);
    ASSERT_NE(old, nullptr);
    ASSERT_EQ(old->register_config(one_proxy("x")), 0u);
    old->worker_started(0, 100, 1, 1000);
    x = old->proxy_counters(0, "x");
    ASSERT_NE(x, nullptr);
    stat_add(x->accepted, 1000);
    stat_add(x->handled, 1000);
    view = passed(*old);
    ASSERT_NE(view, nullptr);
    fresh = StatsTable::create("1.2.4", 4343, 1001);
    ASSERT_NE(fresh, nullptr);
    ASSERT_TRUE(fresh->inherit(*view, false));
    EXPECT_EQ(accepted_sum(fresh->snapshot(1002)), 1000u);
  }
  std::unique_ptr<StatsTable> old, view, fresh;
  ProxyCounters* x = nullptr;
};

// Counts an old worker wrote, which its master then found could not be true and dropped at the
// fold, do not stay in ours once the old master is gone.
TEST_F(LiveOldWorkerTest, CountsTheOldMasterDroppedAreNotKeptForGood) {
  stat_add(x->handled, 10);  // more ended than began: garbage
  EXPECT_NE(old->fold(0), 0u);
  ASSERT_TRUE(fresh->inherit(*view, true));
  EXPECT_EQ(accepted_sum(fresh->snapshot(1003)), 0u);
}

// A name the old master still lists, whose totals are not worth taking this time (a live old
// worker's block gone bad, left out of its snapshot), keeps what was taken for it.
TEST_F(LiveOldWorkerTest, ANameStillListedIsNotForgottenWhenItsTotalsAreNotTaken) {
  stat_add(x->accepted, StatsTable::kCeiling);  // the block is garbage now
  ASSERT_TRUE(fresh->inherit(*view, false));
  EXPECT_EQ(accepted_sum(fresh->snapshot(1003)), 1000u);
}

// The old master may reload while it drains (HUP in the rollback window): those reloads count.
TEST(StatsInheritTest, ReloadsOfTheOldMasterWhileItDrainsAreTakenIn) {
  auto old = StatsTable::create("1.2.3", 4242, 1000);
  ASSERT_NE(old, nullptr);
  old->reload_succeeded(1001);
  old->reload_failed("bad", 1002);
  auto view = passed(*old);
  ASSERT_NE(view, nullptr);
  auto fresh = StatsTable::create("1.2.4", 4343, 1003);
  ASSERT_NE(fresh, nullptr);

  ASSERT_TRUE(fresh->inherit(*view, false));
  Snapshot s = fresh->snapshot(1004);
  EXPECT_EQ(s.reloads_ok, 1u);
  EXPECT_EQ(s.reloads_failed, 1u);

  old->reload_succeeded(1005);
  old->reload_succeeded(1006);
  ASSERT_TRUE(fresh->inherit(*view, false));
  ASSERT_TRUE(fresh->inherit(*view, true));  // taken again at the end: nothing twice
  s = fresh->snapshot(1007);
  EXPECT_EQ(s.reloads_ok, 3u);
  EXPECT_EQ(s.reloads_failed, 1u);
  // This master's own reloads add to them.
  fresh->reload_succeeded(1008);
  EXPECT_EQ(fresh->snapshot(1009).reloads_ok, 4u);
}

}  // namespace
}  // namespace ferry::worker
