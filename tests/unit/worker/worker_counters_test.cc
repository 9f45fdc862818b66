// Tests of CountersTable's hand-out of entries: the master's own record decides which are free,
// never the owner words that every worker can write.
#include <memory>
#include <set>

#include <gtest/gtest.h>

#include "worker/worker_counters.h"

namespace ferry::worker {
namespace {

struct Table {
  std::unique_ptr<unsigned char[]> memory =
      std::make_unique<unsigned char[]>(sizeof(CountersTable) + alignof(CountersTable));
  CountersTable* table = CountersTable::create(memory.get() + alignof(CountersTable) -
                                               reinterpret_cast<std::uintptr_t>(memory.get()) %
                                                   alignof(CountersTable));
};

TEST(WorkerCountersTest, ARogueWorkerClearingOwnerWordsGetsNoLiveEntryHandedOutAgain) {
  Table t;
  CountersTable::Taken taken;
  WorkerCounters* a = t.table->take(taken);
  WorkerCounters* b = t.table->take(taken);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  a->owner.store(1001);
  b->owner.store(1002);
  // A rogue worker writes 0 into the live workers' owner words.
  a->owner.store(0);
  b->owner.store(0);
  WorkerCounters* c = t.table->take(taken);
  ASSERT_NE(c, nullptr);
  EXPECT_NE(c, a);
  EXPECT_NE(c, b);
  // And one that marks a free entry taken does not take it from the master.
  WorkerCounters* next = c + 1;
  next->owner.store(77);
  EXPECT_EQ(t.table->take(taken), next);

  // A released entry is handed out again, whatever its owner word says.
  a->accepted.store(5);
  a->owner.store(-1);
  EXPECT_EQ(t.table->release(*a, taken), 5u);
  a->owner.store(1234);
  EXPECT_EQ(t.table->take(taken), a);

  std::set<WorkerCounters*> all{a, b, c, next};
  while (WorkerCounters* e = t.table->take(taken)) EXPECT_TRUE(all.insert(e).second);
  EXPECT_EQ(all.size(), CountersTable::kEntries);
}

}  // namespace
}  // namespace ferry::worker
