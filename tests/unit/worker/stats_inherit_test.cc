// Tests of a new master's taking in of the old master's statistics across a binary upgrade
// (worker/stats/stats_inherit.cc), with both tables in this process.
#include <fcntl.h>
#include <unistd.h>

#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "worker/stats/stats_table.h"

namespace ferry::worker {
namespace {

// The old table as the new master sees it: the segments passed across the exec, mapped read-only.
std::unique_ptr<StatsTable> passed(const StatsTable& old) {
  const std::string fds = old.pass_to_exec();
  const auto semi = fds.find(';');
  if (semi == std::string::npos) return nullptr;
  // Duplicates: open_passed() owns (and closes) what it is given.
  const int registry = ::fcntl(std::stoi(fds.substr(0, semi)), F_DUPFD_CLOEXEC, 3);
  const int counters = ::fcntl(std::stoi(fds.substr(semi + 1)), F_DUPFD_CLOEXEC, 3);
  return StatsTable::open_passed(registry, counters);
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
