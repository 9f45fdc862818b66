// Reload under load: 50 client threads cycle short echo connections through ferry while it is
// reloaded 20 times; not one connection may fail, and every reload must really replace the
// workers — with the accept mutex, with EPOLLEXCLUSIVE, with reuseport, and with reuseport while
// each reload changes worker_processes 2 → 1 → 2. Also: how EPOLLEXCLUSIVE spreads connections.
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "event/syscall_util.h"
#include "tests/support/config_text.h"
#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/load.h"
#include "tests/support/process.h"

namespace ferry::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

struct Mode {
  const char* name;
  bool accept_mutex;
  bool reuseport;
  bool alternate_workers;  // 2 → 1 → 2 → ...
};

std::string config(const Mode& m, int workers, int port, int backend) {
  return config_text(
      "worker_processes = " + std::to_string(workers) +
          ";\nworker_connections = 4096;\nevents = { accept_mutex = " +
          (m.accept_mutex ? "true" : "false") + "; accept_mutex_delay = \"20ms\"; };",
      {{"web",
        {loopback(port)},
        "app",
        std::string("backlog = 4096; reuseport = ") + (m.reuseport ? "true" : "false") + ";"}},
      {upstream_of({server_at(backend)})});
}

class ReloadUnderLoadTest : public ::testing::TestWithParam<Mode> {};

TEST_P(ReloadUnderLoadTest, TwentyReloadsLoseNoConnection) {
  const Mode& mode = GetParam();
  EchoServer backend;
  const int port = free_port();
  FerryInstance ferry(config(mode, 2, port, backend.port()));
  ASSERT_TRUE(ferry.start()) << ferry.log();

  EchoLoad load(port, 50);
  ASSERT_TRUE(eventually([&] { return load.done() > 500; })) << "no traffic gets through";
  std::set<pid_t> workers = ferry.workers();
  for (int i = 0; i < 20; ++i) {
    const int n = mode.alternate_workers && i % 2 == 0 ? 1 : 2;
    ferry.rewrite(config(mode, n, port, backend.port()));
    const long before = load.done();
    const Finished r = ferry.command("reload");
    ferry.drain_log();
    ASSERT_EQ(r.exit_code, 0) << "reload " << i << ": " << r.err << "ferry's log ends with:\n"
                              << ferry.log().substr(
                                     ferry.log().size() > 4000 ? ferry.log().size() - 4000 : 0);
    // The new generation is serving: none of its workers was there before the reload.
    std::set<pid_t> now;
    ASSERT_TRUE(eventually([&] {
      now = ferry.workers();
      std::size_t fresh = 0;
      for (pid_t w : now) fresh += workers.count(w) == 0;
      return fresh >= static_cast<std::size_t>(n);
    })) << "reload "
        << i << " did not start new workers";
    workers = now;
    ASSERT_TRUE(eventually([&] { return load.done() > before + 50; }))
        << "traffic stalled after reload " << i;
  }
  load.stop();
  std::printf("[ mode %s ] %ld connections, %ld failed, 20 reloads\n", mode.name, load.done(),
              load.failed());
  EXPECT_EQ(load.failed(), 0) << load.done() << " connections succeeded";
  // Only the last generation remains once the old ones drained.
  const int last = mode.alternate_workers ? 2 : 2;
  EXPECT_TRUE(eventually([&] { return ferry.workers().size() == static_cast<std::size_t>(last); }))
      << ferry.log();
}

INSTANTIATE_TEST_SUITE_P(AcceptModes, ReloadUnderLoadTest,
                         ::testing::Values(Mode{"AcceptMutex", true, false, false},
                                           Mode{"EpollExclusive", false, false, false},
                                           Mode{"Reuseport", false, true, false},
                                           Mode{"ReuseportTwoOneTwo", false, true, true}),
                         [](const auto& info) { return std::string(info.param.name); });

// With two workers and EPOLLEXCLUSIVE, 2,000 connections one after another split no worse than
// 25/75: the periodic re-registration keeps the first worker from taking most of them (without
// it: 16/84 here, every time). A quiet machine splits about 50/50 with it; other jobs loading
// the two cores skew who is awake in epoll_wait (19/81 and once 12/88 were seen, with a
// container build or a previous test's processes still winding down), so this test runs alone
// (is_parallel: false) and a skewed split is measured once more with a fresh ferry: the
// mechanism missing skews both.
std::map<pid_t, int> spread_of(int connections) {
  EchoServer backend;
  const int port = free_port();
  const Mode mode{"EpollExclusive", false, false, false};
  FerryInstance ferry(config(mode, 2, port, backend.port()), "debug");
  std::map<pid_t, int> per_worker;
  if (!ferry.start() || ferry.workers().size() != 2) {
    ADD_FAILURE() << ferry.log();
    return per_worker;
  }
  for (int i = 0; i < connections; ++i) {
    if (i % 20 == 0) ferry.drain_log();  // debug lines: keep the pipe from filling up
    const event::UniqueFd fd(connect_to_port(port));
    if (fd.get() < 0 || !echo_round_trip(fd.get(), "spread")) {
      ADD_FAILURE() << "connection " << i << " failed";
      return per_worker;
    }
  }
  EXPECT_TRUE(eventually([&] {
    std::size_t lines = 0;
    for (std::size_t at = 0;
         (at = ferry.log().find("accepted 127.0.0.1:", at)) != std::string::npos; ++at) {
      ++lines;
    }
    ferry.drain_log();
    return lines >= static_cast<std::size_t>(connections);
  }));
  std::istringstream log(ferry.log());
  for (std::string line; std::getline(log, line);) {
    if (line.find("accepted 127.0.0.1:") == std::string::npos) continue;
    std::istringstream fields(line);
    std::string date, time, level;
    pid_t pid = 0;
    fields >> date >> time >> level >> pid;
    ++per_worker[pid];
  }
  return per_worker;
}

TEST(SpreadTest, EpollExclusiveSpreadsConnectionsOverTheWorkers) {
  constexpr int kConnections = 2000;
  const auto within = [](const std::map<pid_t, int>& per_worker) {
    if (per_worker.size() != 2) return false;
    for (const auto& [pid, count] : per_worker) {
      std::printf("[ spread ] worker %d accepted %d of %d\n", pid, count, kConnections);
      if (count < kConnections * 25 / 100 || count > kConnections * 75 / 100) return false;
    }
    return true;
  };
  if (within(spread_of(kConnections))) return;
  ASSERT_FALSE(HasFailure());
  std::printf("[ spread ] skewed: measured once more\n");
  const auto again = spread_of(kConnections);
  ASSERT_EQ(again.size(), 2U);
  for (const auto& [pid, count] : again) {
    EXPECT_GE(count, kConnections * 25 / 100) << "worker " << pid;
    EXPECT_LE(count, kConnections * 75 / 100) << "worker " << pid;
  }
}

}  // namespace
}  // namespace ferry::test
