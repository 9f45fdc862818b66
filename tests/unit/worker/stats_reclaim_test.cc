// Tests of the statistics registry's reclaiming of names once it is full: never a name a live
// worker's configuration has, the totals moved to "(reclaimed)", the index's counters zeroed.
#include <string>

#include <gtest/gtest.h>

#include "tests/unit/worker/one_proxy_config.h"
#include "worker/stats/stats_table.h"

namespace ferry::worker {
namespace {

std::uint64_t accepted(const Snapshot& s, const std::string& name) {
  for (const auto& p : s.proxies) {
    if (p.name == name) return p.accepted;
  }
  ADD_FAILURE() << "no proxy " << name;
  return 0;
}

TEST(StatsReclaimTest, OnlyANameNoLiveWorkerHasIsReclaimedAndItsTotalsAreKept) {
  auto stats = StatsTable::create("1.2.3", 4242, 1000);
  ASSERT_NE(stats, nullptr);
  stats->set_capacity_for_tests(1, 1);
  EXPECT_EQ(stats->register_config(one_proxy("a")), 0u);
  stats->worker_started(0, 100, 1, 1000);
  ProxyCounters* a = stats->proxy_counters(0, "a");
  ASSERT_NE(a, nullptr);
  stat_add(a->accepted, 5);
  stat_add(a->handled, 5);

  // The worker of "a" lives: "b" finds no place.
  EXPECT_EQ(stats->register_config(one_proxy("b")), 2u);
  EXPECT_EQ(stats->proxy_index("b"), std::nullopt);
  EXPECT_EQ(stats->fold(0), 0u);
  stats->worker_started(1, 101, 2, 1000);  // forked with b's configuration
  // A stray count at the index in the live worker's block must not reach the next name.
  stat_add(stats->proxy_counters(1, "a")->accepted, 7);

  // "a" was last configured before the latest configuration, and no live worker has it.
  EXPECT_EQ(stats->register_config(one_proxy("c")), 0u);
  EXPECT_EQ(stats->proxy_index("c"), 0u);
  EXPECT_EQ(stats->proxy_index("a"), std::nullopt);
  EXPECT_EQ(stats->server_index("uc", "h:c"), 0u);
  const Snapshot s = stats->snapshot();
  EXPECT_EQ(accepted(s, "c"), 0u);
  EXPECT_EQ(accepted(s, std::string(StatsTable::kReclaimed)), 5u);
  ASSERT_EQ(s.proxies.size(), 2u);
  EXPECT_FALSE(s.proxies[1].configured);

  // "c" is in the latest configuration: a new name waits for the next reload.
  EXPECT_EQ(stats->register_config(one_proxy("d")), 2u);
  EXPECT_EQ(stats->proxy_index("c"), 0u);
}

}  // namespace
}  // namespace ferry::worker
