// Tests of master/generations' bookkeeping: when a pending generation counts as serving.
#include <list>

#include <gtest/gtest.h>

#include "master/master.h"

namespace ferry::master {
namespace {

WorkerProcess& add(std::list<WorkerProcess>& workers, int generation, bool ready,
                   bool told_to_stop = false) {
  WorkerProcess& w = workers.emplace_back();
  w.generation = generation;
  w.ready = ready;
  w.told_to_stop = told_to_stop;
  return w;
}

TEST(GenerationServesTest, NotWithoutWorkers) {
  std::list<WorkerProcess> workers;
  EXPECT_FALSE(generation_serves(workers, 2));
  add(workers, 1, true);
  EXPECT_FALSE(generation_serves(workers, 2));  // only another generation's
}

TEST(GenerationServesTest, OnceEveryWorkerOfItReportedReady) {
  std::list<WorkerProcess> workers;
  add(workers, 1, true);
  add(workers, 2, true);
  WorkerProcess& late = add(workers, 2, false);
  add(workers, 1, false);  // an old worker's state does not matter
  EXPECT_FALSE(generation_serves(workers, 2));
  late.ready = true;
  EXPECT_TRUE(generation_serves(workers, 2));
}

TEST(GenerationServesTest, AWorkerToldToStopIsNotWaitedFor) {
  std::list<WorkerProcess> workers;
  add(workers, 3, true);
  add(workers, 3, false, /*told_to_stop=*/true);
  EXPECT_TRUE(generation_serves(workers, 3));
  workers.front().told_to_stop = true;
  EXPECT_FALSE(generation_serves(workers, 3));  // none left to serve
}

}  // namespace
}  // namespace ferry::master
