// Tests of worker/stats/stats_table: the registry's indices and limits, counters summed over
// slots and folded when a worker is reaped (a SIGKILLed child's too), snapshots that never go
// back while the master folds, the reload error text never torn, server states and health.
#include "worker/stats/stats_table.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <new>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "event/shared_memory.h"

namespace ferry::worker {
namespace {

class StatsTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    stats_ = StatsTable::create("1.2.3", 4242, 1000);
    ASSERT_NE(stats_, nullptr);
  }

  const Snapshot::Proxy* proxy(const Snapshot& s, const std::string& name) {
    for (const auto& p : s.proxies) {
      if (p.name == name) return &p;
    }
    ADD_FAILURE() << "no proxy " << name;
    return nullptr;
  }
  const Snapshot::Server* server(const Snapshot& s, const std::string& upstream,
                                 const std::string& address) {
    for (const auto& u : s.upstreams) {
      if (u.name != upstream) continue;
      for (const auto& v : u.servers) {
        if (v.address == address) return &v;
      }
    }
    ADD_FAILURE() << "no server " << address << " in " << upstream;
    return nullptr;
  }

  std::unique_ptr<StatsTable> stats_;
};

conf::Server server_at(const std::string& text, bool backup = false, bool down = false) {
  conf::Server s;
  s.address.text = text;
  s.backup = backup;
  s.down = down;
  return s;
}

conf::Proxy proxy_to(const std::string& name, const std::string& upstream) {
  conf::Proxy p;
  p.name = name;
  if (upstream.find(':') != std::string::npos) {
    conf::Address a;
    a.text = upstream;
    p.upstream_address = a;
  } else {
    p.upstream = upstream;
  }
  return p;
}

TEST_F(StatsTableTest, NamesKeepTheirIndices) {
  EXPECT_EQ(stats_->register_proxy("web"), 0u);
  EXPECT_EQ(stats_->register_proxy("db"), 1u);
  EXPECT_EQ(stats_->register_proxy("web"), 0u);
  EXPECT_EQ(stats_->register_server("app", "127.0.0.1:9001"), 0u);
  EXPECT_EQ(stats_->register_server("app", "127.0.0.1:9002"), 1u);
  // The same address in another upstream is another server.
  EXPECT_EQ(stats_->register_server("other", "127.0.0.1:9001"), 2u);
  EXPECT_EQ(stats_->register_server("app", "127.0.0.1:9002"), 1u);
  EXPECT_EQ(stats_->proxy_index("db"), 1u);
  EXPECT_EQ(stats_->proxy_index("we"), std::nullopt);
  EXPECT_EQ(stats_->server_index("other", "127.0.0.1:9001"), 2u);
  EXPECT_EQ(stats_->server_index("other", "127.0.0.1:9002"), std::nullopt);

  ProxyCounters* web0 = stats_->proxy_counters(0, "web");
  ASSERT_NE(web0, nullptr);
  EXPECT_EQ(stats_->proxy_counters(0, "web"), web0);
  EXPECT_NE(stats_->proxy_counters(1, "web"), web0);
  EXPECT_NE(stats_->proxy_counters(0, "db"), web0);
  EXPECT_EQ(stats_->proxy_counters(0, "nope"), nullptr);
  EXPECT_EQ(stats_->proxy_counters(StatsTable::kNoSlot, "web"), nullptr);
  EXPECT_EQ(stats_->proxy_counters(StatsTable::kSlots, "web"), nullptr);
  EXPECT_NE(stats_->server_counters(StatsTable::kSlots - 1, "app", "127.0.0.1:9002"), nullptr);
  EXPECT_EQ(stats_->server_counters(0, "app", "127.0.0.1:9003"), nullptr);
  EXPECT_EQ(stats_->server_counters(StatsTable::kNoSlot, "app", "127.0.0.1:9002"), nullptr);

  // Workers of different slots never share a cache line.
  const auto* a = reinterpret_cast<const char*>(stats_->proxy_counters(0, "web"));
  const auto* b = reinterpret_cast<const char*>(stats_->proxy_counters(1, "web"));
  EXPECT_GE(b - a, 64);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a) % 64, 0u);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b) % 64, 0u);
}

TEST_F(StatsTableTest, AFullRegistryRefusesMoreAndKeepsWhatItHas) {
  for (std::size_t i = 0; i < StatsTable::kMaxProxies; ++i) {
    ASSERT_EQ(stats_->register_proxy("p" + std::to_string(i)), i);
  }
  EXPECT_EQ(stats_->register_proxy("one too many"), std::nullopt);
  EXPECT_EQ(stats_->proxy_counters(0, "one too many"), nullptr);
  EXPECT_EQ(stats_->register_proxy("p17"), 17u);  // known names still resolve
  for (std::size_t i = 0; i < StatsTable::kMaxServers; ++i) {
    ASSERT_EQ(stats_->register_server("u" + std::to_string(i % 7), "h:" + std::to_string(i)), i);
  }
  EXPECT_EQ(stats_->register_server("u0", "h:99999"), std::nullopt);
  EXPECT_EQ(stats_->register_server("u3", "h:3"), 3u);

  const Snapshot s = stats_->snapshot(2000);
  ASSERT_EQ(s.proxies.size(), StatsTable::kMaxProxies);
  for (std::size_t i = 0; i < s.proxies.size(); ++i) {
    EXPECT_EQ(s.proxies[i].name, "p" + std::to_string(i));
  }
  std::size_t servers = 0;
  for (const auto& u : s.upstreams) {
    for (const auto& v : u.servers) {
      const std::size_t i = std::stoul(v.address.substr(2));
      EXPECT_EQ(u.name, "u" + std::to_string(i % 7));
      ++servers;
    }
  }
  EXPECT_EQ(servers, StatsTable::kMaxServers);
}

TEST_F(StatsTableTest, NamesTooLongAreRefusedNotCut) {
  const std::string longest(StatsTable::kMaxName, 'x');
  const std::string too_long(StatsTable::kMaxName + 1, 'x');
  EXPECT_EQ(stats_->register_proxy(too_long), std::nullopt);
  EXPECT_EQ(stats_->register_proxy(longest), 0u);
  EXPECT_EQ(stats_->proxy_index(too_long), std::nullopt);
  EXPECT_EQ(stats_->register_proxy(too_long), std::nullopt);
  const std::string address(StatsTable::kMaxAddress, 'a');
  EXPECT_EQ(stats_->register_server("u", address + "b"), std::nullopt);
  EXPECT_EQ(stats_->register_server(too_long, "h:1"), std::nullopt);
  EXPECT_EQ(stats_->register_server(longest, address), 0u);
  EXPECT_EQ(stats_->register_proxy(""), 1u);  // the registry goes on after a refusal

  conf::Config cfg;
  cfg.proxies.push_back(proxy_to(too_long, "app"));
  cfg.proxies.push_back(proxy_to("ok", "app"));
  conf::Upstream app;
  app.name = "app";
  app.servers.push_back(server_at(std::string(StatsTable::kMaxAddress + 1, '1')));
  app.servers.push_back(server_at("h:2"));
  cfg.upstreams.push_back(app);
  EXPECT_EQ(stats_->register_config(cfg), 2u);

  const Snapshot s = stats_->snapshot(2000);
  ASSERT_EQ(s.proxies.size(), 3u);
  EXPECT_EQ(s.proxies[0].name, longest);
  EXPECT_EQ(s.proxies[1].name, "");
  EXPECT_EQ(s.proxies[2].name, "ok");
  ASSERT_EQ(s.upstreams.size(), 2u);
  EXPECT_EQ(s.upstreams[0].name, longest);
  EXPECT_EQ(s.upstreams[0].servers.at(0).address, address);
  EXPECT_EQ(s.upstreams[1].servers.size(), 1u);
}

TEST_F(StatsTableTest, SlotsAreSummedAndListed) {
  stats_->register_proxy("web");
  stats_->register_server("app", "h:1");
  const std::size_t slots[] = {0, 5, StatsTable::kSlots - 1};
  std::uint64_t n = 1;
  for (std::size_t slot : slots) {
    stats_->worker_started(slot, static_cast<pid_t>(100 + slot), 3, 1500);
    ProxyCounters* p = stats_->proxy_counters(slot, "web");
    stat_add(p->accepted, n);
    stat_add(p->handled, n - 1);
    stat_add(p->active, 1);
    stat_add(p->bytes_from_clients, n * 1000);
    ServerCounters* v = stats_->server_counters(slot, "app", "h:1");
    stat_add(v->sessions, n);
    stat_add(v->active, 2);
    stat_sub(v->active);
    stat_add(v->connect_failures, 7);
    stats_->set_connections(slot, n * 10);
    n *= 2;
  }
  const Snapshot s = stats_->snapshot(2000);
  EXPECT_EQ(s.version, "1.2.3");
  EXPECT_EQ(s.pid, 4242);
  EXPECT_EQ(s.started, 1000);
  EXPECT_EQ(s.now, 2000);
  const auto* p = proxy(s, "web");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->accepted, 7u);
  EXPECT_EQ(p->handled, 4u);
  EXPECT_EQ(p->active, 3u);
  EXPECT_EQ(p->bytes_from_clients, 7000u);
  EXPECT_EQ(p->bytes_to_clients, 0u);
  const auto* v = server(s, "app", "h:1");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->sessions, 7u);
  EXPECT_EQ(v->active, 3u);
  EXPECT_EQ(v->connect_failures, 21u);
  ASSERT_EQ(s.workers.size(), 3u);
  EXPECT_EQ(s.workers[0].pid, 100);
  EXPECT_EQ(s.workers[1].pid, 105);
  EXPECT_EQ(s.workers[2].pid, static_cast<pid_t>(100 + StatsTable::kSlots - 1));
  EXPECT_EQ(s.workers[2].generation, 3);
  EXPECT_EQ(s.workers[2].started, 1500);
  EXPECT_EQ(s.workers[2].connections, 40u);
}

TEST_F(StatsTableTest, FoldKeepsTotalsDropsActiveAndCleansTheSlot) {
  stats_->register_proxy("web");
  stats_->register_server("app", "h:1");
  stats_->worker_started(1, 101, 1, 1500);
  stats_->worker_started(2, 102, 1, 1500);
  for (std::size_t slot : {1, 2}) {
    ProxyCounters* p = stats_->proxy_counters(slot, "web");
    stat_add(p->accepted, 10);
    stat_add(p->handled, 8);
    stat_add(p->active, 2);
    stat_add(p->denied, 1);
    stat_add(p->limited, 3);
    stat_add(p->bytes_to_clients, 500);
    ServerCounters* v = stats_->server_counters(slot, "app", "h:1");
    stat_add(v->sessions, 9);
    stat_add(v->active, 2);
    stat_add(v->bytes_sent, 44);
    stat_add(v->bytes_received, 55);
  }
  stats_->set_connections(1, 4);
  stats_->fold(1);

  Snapshot s = stats_->snapshot(2000);
  const auto* p = proxy(s, "web");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->accepted, 20u);
  EXPECT_EQ(p->handled, 18u);  // the dead worker's 2 open sessions ended with it
  EXPECT_EQ(p->active, 2u);
  EXPECT_EQ(p->denied, 2u);
  EXPECT_EQ(p->limited, 6u);
  EXPECT_EQ(p->bytes_to_clients, 1000u);
  const auto* v = server(s, "app", "h:1");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->sessions, 18u);
  EXPECT_EQ(v->active, 2u);
  EXPECT_EQ(v->bytes_sent, 88u);
  EXPECT_EQ(v->bytes_received, 110u);
  ASSERT_EQ(s.workers.size(), 1u);
  EXPECT_EQ(s.workers[0].pid, 102);

  // Slot 1 is clean for its next worker, which counts on top of the totals.
  ProxyCounters* again = stats_->proxy_counters(1, "web");
  EXPECT_EQ(again->accepted.load(), 0u);
  EXPECT_EQ(again->active.load(), 0u);
  EXPECT_EQ(stats_->server_counters(1, "app", "h:1")->bytes_sent.load(), 0u);
  stats_->worker_started(1, 201, 2, 1800);
  stat_add(again->accepted);
  s = stats_->snapshot(2000);
  EXPECT_EQ(proxy(s, "web")->accepted, 21u);
  ASSERT_EQ(s.workers.size(), 2u);
  EXPECT_EQ(s.workers[0].pid, 201);
  EXPECT_EQ(s.workers[0].connections, 0u);  // not the dead worker's 4
  EXPECT_EQ(s.workers[0].generation, 2);

  stats_->fold(StatsTable::kNoSlot);  // no slot: nothing to do
  stats_->fold(2);
  stats_->fold(1);
  s = stats_->snapshot(2000);
  EXPECT_EQ(proxy(s, "web")->accepted, 21u);
  EXPECT_EQ(proxy(s, "web")->active, 0u);
  EXPECT_EQ(s.workers.size(), 0u);
}

TEST_F(StatsTableTest, AKilledWorkersCountsAreFoldedExactly) {
  stats_->register_proxy("web");
  stats_->register_server("app", "h:1");
  constexpr std::size_t kSlot = 9;
  constexpr std::uint64_t kSessions = 100'000;
  stats_->worker_started(3, 103, 1, 1500);
  stat_add(stats_->proxy_counters(3, "web")->accepted, 5);  // a live worker's

  stats_->worker_started(kSlot, 0, 1, 1600);  // as the master does: before the fork
  const pid_t pid = ::fork();
  ASSERT_NE(pid, -1);
  if (pid == 0) {
    ProxyCounters* p = stats_->proxy_counters(kSlot, "web");
    ServerCounters* v = stats_->server_counters(kSlot, "app", "h:1");
    if (p == nullptr || v == nullptr) ::_exit(1);
    for (std::uint64_t i = 0; i < kSessions; ++i) {
      stat_add(p->accepted);
      stat_add(p->active);
      stat_add(v->sessions);
      stat_add(v->active);
      stat_add(p->bytes_from_clients, 3);
      stat_add(v->bytes_sent, 3);
      if (i % 4 != 0) {
        stat_sub(v->active);
        stat_sub(p->active);
        stat_add(p->handled);
      }
    }
    ::kill(::getpid(), SIGKILL);
    ::_exit(2);
  }
  stats_->worker_forked(kSlot, pid);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;

  Snapshot s = stats_->snapshot(2000);
  EXPECT_EQ(proxy(s, "web")->accepted, kSessions + 5);
  EXPECT_EQ(proxy(s, "web")->active, kSessions / 4);
  stats_->fold(kSlot);
  s = stats_->snapshot(2000);
  const auto* p = proxy(s, "web");
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->accepted, kSessions + 5);
  EXPECT_EQ(p->handled, kSessions);  // its open quarter ended with it
  EXPECT_EQ(p->active, 0u);
  EXPECT_EQ(p->bytes_from_clients, 3 * kSessions);
  const auto* v = server(s, "app", "h:1");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->sessions, kSessions);
  EXPECT_EQ(v->active, 0u);
  EXPECT_EQ(v->bytes_sent, 3 * kSessions);
  ASSERT_EQ(s.workers.size(), 1u);
  EXPECT_EQ(s.workers[0].pid, 103);
}

// How long the races below run: a torn read needs the two processes to overlap, which on a
// busy machine takes a while.
constexpr auto kRaceFor = std::chrono::milliseconds(1000);

bool racing(std::chrono::steady_clock::time_point start) {
  return std::chrono::steady_clock::now() - start < kRaceFor;
}

// A reader in another process never sees the total go back while the master starts, counts
// into and folds slot after slot: a worker's counts are in its slot or in the retired block,
// never in both nor in neither. (The last slots: a snapshot reads them last, long after the
// retired block; and every proxy registered, so that a snapshot takes longer to get there.)
TEST_F(StatsTableTest, TotalsNeverGoBackWhileTheMasterFolds) {
  stats_->register_proxy("web");
  for (std::size_t i = 1; i < StatsTable::kMaxProxies; ++i) {
    stats_->register_proxy("p" + std::to_string(i));
  }
  stats_->register_server("app", "h:1");
  const pid_t reader = ::fork();
  ASSERT_NE(reader, -1);
  if (reader == 0) {
    std::uint64_t last = 0;
    std::uint64_t last_bytes = 0;
    for (const auto start = std::chrono::steady_clock::now(); racing(start);) {
      const Snapshot s = stats_->snapshot(0);
      const std::uint64_t accepted = s.proxies.at(0).accepted;
      const std::uint64_t bytes = s.upstreams.at(0).servers.at(0).bytes_sent;
      if (accepted < last || bytes < last_bytes) ::_exit(1);
      last = accepted;
      last_bytes = bytes;
    }
    ::_exit(last > 0 ? 0 : 2);
  }
  int status = 0;
  for (std::uint64_t round = 0; ::waitpid(reader, &status, WNOHANG) == 0; ++round) {
    const std::size_t slot = StatsTable::kSlots - 1 - round % 3;
    stats_->worker_started(slot, 1000 + static_cast<pid_t>(slot), 1, 0);
    // Counts that stay in the slot a while, so that a reader sees them there before the fold.
    for (int i = 0; i < 1000; ++i) {
      stat_add(stats_->proxy_counters(slot, "web")->accepted);
      stat_add(stats_->server_counters(slot, "app", "h:1")->bytes_sent, 5);
    }
    stats_->fold(slot);
  }
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "a total went back: " << status;
}

// The error text is written while another process reads it: each read is one whole text,
// and the one that goes with the counts and the time read with it.
TEST_F(StatsTableTest, TheReloadErrorIsNeverTorn) {
  const auto text_for = [](std::uint64_t n) {
    const std::size_t length = n % 3 == 0 ? StatsTable::kMaxError - 12 : n % 37;
    return std::string(length, static_cast<char>('a' + n % 26)) + "#" + std::to_string(n);
  };
  event::SharedMemory flag_shm;
  ASSERT_FALSE(flag_shm.create(sizeof(std::atomic<bool>)));
  auto* stop = new (flag_shm.data()) std::atomic<bool>(false);
  const pid_t writer = ::fork();
  ASSERT_NE(writer, -1);
  if (writer == 0) {
    for (std::uint64_t n = 1; !stop->load(); ++n) {
      if (n % 5 == 0) {
        stats_->reload_succeeded(static_cast<std::int64_t>(n));
      } else {
        stats_->reload_failed(text_for(n), static_cast<std::int64_t>(n));
      }
    }
    ::_exit(0);
  }
  std::uint64_t reads = 0;
  std::uint64_t n = 0;
  for (const auto start = std::chrono::steady_clock::now(); racing(start);) {
    const Snapshot s = stats_->snapshot(0);
    ++reads;
    n = s.reloads_ok + s.reloads_failed;
    if (n == 0) continue;
    // The last write was the n-th: its result and time, and the text of the last failure.
    const std::uint64_t last_failure = n % 5 == 0 ? n - 1 : n;
    if (s.last_reload_at != static_cast<std::int64_t>(n) || s.reloads_ok != n / 5 ||
        s.last_reload != (n % 5 == 0 ? ReloadResult::ok : ReloadResult::failed) ||
        s.last_reload_error != text_for(last_failure)) {
      ADD_FAILURE() << "read " << reads << " torn: " << s.reloads_ok << " ok, " << s.reloads_failed
                    << " failed, at " << s.last_reload_at << ", " << s.last_reload_error;
      break;
    }
  }
  stop->store(true);
  int status = 0;
  ASSERT_EQ(::waitpid(writer, &status, 0), writer);
  EXPECT_GT(n, 1000u);
  EXPECT_GT(reads, 1000u);
}

TEST_F(StatsTableTest, ALongErrorIsCutAtACharacter) {
  std::string error(StatsTable::kMaxError - 1, 'x');
  error += "\xc3\xa9tranger";  // "é" across the limit
  stats_->reload_failed(error, 5);
  const Snapshot s = stats_->snapshot(10);
  EXPECT_EQ(s.last_reload_error, std::string(StatsTable::kMaxError - 1, 'x'));
  EXPECT_EQ(s.reloads_failed, 1u);
  EXPECT_EQ(s.last_reload, ReloadResult::failed);
}

TEST_F(StatsTableTest, ServerStatesFollowTheLatestConfiguration) {
  conf::Config cfg;
  conf::Upstream app;
  app.name = "app";
  app.servers = {server_at("h:1"), server_at("h:2", true), server_at("h:3", false, true),
                 server_at("h:4")};
  app.health_check = conf::HealthCheck{};
  conf::Upstream plain;
  plain.name = "plain";
  plain.servers = {server_at("h:9")};
  cfg.upstreams = {app, plain};
  cfg.proxies = {proxy_to("web", "app"), proxy_to("direct", "10.0.0.1:80")};
  EXPECT_EQ(stats_->register_config(cfg), 0u);
  stats_->set_generation(1);
  const std::string_view implicit = StatsTable::upstream_name_of(cfg.proxies[1]);
  EXPECT_EQ(implicit, "10.0.0.1:80");
  EXPECT_EQ(StatsTable::upstream_name_of(cfg.proxies[0]), "app");
  EXPECT_NE(stats_->server_counters(0, implicit, "10.0.0.1:80"), nullptr);

  Snapshot s = stats_->snapshot(100);
  EXPECT_EQ(server(s, "app", "h:1")->state, ServerState::up);
  EXPECT_EQ(server(s, "app", "h:2")->state, ServerState::backup);
  EXPECT_EQ(server(s, "app", "h:3")->state, ServerState::down);
  EXPECT_EQ(server(s, "app", "h:1")->health, CheckResult::none);
  EXPECT_EQ(server(s, "10.0.0.1:80", "10.0.0.1:80")->state, ServerState::up);
  EXPECT_TRUE(proxy(s, "direct")->configured);

  // Health checks: the newest generation's count, an older one's do not.
  const std::size_t h1 = *stats_->server_index("app", "h:1");
  const std::size_t h2 = *stats_->server_index("app", "h:2");
  const std::size_t h9 = *stats_->server_index("plain", "h:9");
  stats_->set_health(h1, 1, false, false, 90);
  stats_->set_health(h2, 1, true, false, 91);
  stats_->set_health(h9, 1, false, false, 92);  // no health_check there: ignored
  stats_->set_health(StatsTable::kMaxServers, 1, false, false, 92);
  s = stats_->snapshot(100);
  EXPECT_EQ(server(s, "app", "h:1")->state, ServerState::down);
  EXPECT_EQ(server(s, "app", "h:1")->health, CheckResult::failed);
  EXPECT_EQ(server(s, "app", "h:1")->health_at, 90);
  EXPECT_EQ(server(s, "app", "h:2")->state, ServerState::backup);  // failed once, still up
  EXPECT_EQ(server(s, "app", "h:2")->health, CheckResult::failed);
  EXPECT_EQ(server(s, "plain", "h:9")->state, ServerState::up);
  EXPECT_EQ(server(s, "plain", "h:9")->health, CheckResult::none);
  stats_->set_generation(2);
  stats_->set_health(h1, 1, true, true, 95);  // the draining generation's checker
  EXPECT_EQ(server(stats_->snapshot(100), "app", "h:1")->state, ServerState::down);
  stats_->set_health(h1, 2, true, true, 96);
  s = stats_->snapshot(100);
  EXPECT_EQ(server(s, "app", "h:1")->state, ServerState::up);
  EXPECT_EQ(server(s, "app", "h:1")->health, CheckResult::ok);
  EXPECT_EQ(server(s, "app", "h:1")->health_at, 96);

  // A reload drops h:4 (one session still open) and h:1 (none), the proxy "direct", and the
  // health check; h:3 is no longer down.
  stats_->worker_started(0, 100, 1, 0);
  stat_add(stats_->server_counters(0, "app", "h:4")->sessions);
  stat_add(stats_->server_counters(0, "app", "h:4")->active);
  stat_add(stats_->server_counters(0, "app", "h:1")->sessions, 5);
  app.servers = {server_at("h:2", true), server_at("h:3")};
  app.health_check.reset();
  cfg.upstreams = {app, plain};
  cfg.proxies = {proxy_to("web", "app")};
  EXPECT_EQ(stats_->register_config(cfg), 0u);
  s = stats_->snapshot(100);
  EXPECT_EQ(server(s, "app", "h:4")->state, ServerState::draining);
  EXPECT_EQ(server(s, "app", "h:1")->state, ServerState::removed);
  EXPECT_EQ(server(s, "app", "h:1")->sessions, 5u);  // its totals stay
  EXPECT_EQ(server(s, "app", "h:3")->state, ServerState::up);
  EXPECT_EQ(server(s, "app", "h:2")->health, CheckResult::none);
  EXPECT_EQ(server(s, "10.0.0.1:80", "10.0.0.1:80")->state, ServerState::removed);
  EXPECT_FALSE(proxy(s, "direct")->configured);
  EXPECT_TRUE(proxy(s, "web")->configured);
  ASSERT_EQ(s.upstreams.size(), 3u);
  EXPECT_EQ(s.upstreams[0].name, "app");
  EXPECT_EQ(s.upstreams[0].servers.size(), 4u);  // in the order first registered

  stats_->fold(0);  // its last session gone with its worker
  EXPECT_EQ(server(stats_->snapshot(100), "app", "h:4")->state, ServerState::removed);
}

// A server a live worker's passive checks hold failed shows `failed` until the time it gave,
// unless an active check passed after the failure; a reaped worker's verdict goes with it.
TEST_F(StatsTableTest, APassivelyFailedServerShowsFailedWhileAWorkerHoldsItSo) {
  conf::Config cfg;
  conf::Upstream app;
  app.name = "app";
  app.servers = {server_at("h:1"), server_at("h:2")};
  app.health_check = conf::HealthCheck{};
  cfg.upstreams = {app};
  cfg.proxies = {proxy_to("web", "app")};
  ASSERT_EQ(stats_->register_config(cfg), 0u);
  stats_->set_generation(1);
  stats_->worker_started(0, 100, 1, 0);
  stats_->worker_started(1, 101, 1, 0);
  stats_->server_counters(0, "app", "h:1")->failed.store(passive_failure_word(100, 110));
  stats_->server_counters(1, "app", "h:1")->failed.store(passive_failure_word(100, 105));
  EXPECT_EQ(server(stats_->snapshot(100), "app", "h:1")->state, ServerState::failed);
  EXPECT_EQ(server(stats_->snapshot(100), "app", "h:2")->state, ServerState::up);
  EXPECT_EQ(server(stats_->snapshot(107), "app", "h:1")->state, ServerState::failed);
  EXPECT_EQ(server(stats_->snapshot(110), "app", "h:1")->state, ServerState::up);
  const std::size_t h1 = *stats_->server_index("app", "h:1");
  stats_->set_health(h1, 1, true, true, 100);  // the same second: not known to be after
  EXPECT_EQ(server(stats_->snapshot(102), "app", "h:1")->state, ServerState::failed);
  stats_->set_health(h1, 1, true, false, 101);  // failed after: still failed
  EXPECT_EQ(server(stats_->snapshot(102), "app", "h:1")->state, ServerState::failed);
  stats_->set_health(h1, 1, true, true, 102);  // passed after: cleared, as in the balancer
  EXPECT_EQ(server(stats_->snapshot(102), "app", "h:1")->state, ServerState::up);
  stats_->set_health(h1, 1, false, false, 103);  // down by the check takes precedence
  EXPECT_EQ(server(stats_->snapshot(103), "app", "h:1")->state, ServerState::down);
  stats_->set_health(h1, 1, true, true, 99);
  stats_->fold(0);
  EXPECT_EQ(server(stats_->snapshot(104), "app", "h:1")->state, ServerState::failed);
  stats_->fold(1);
  EXPECT_EQ(server(stats_->snapshot(104), "app", "h:1")->state, ServerState::up);
  stats_->worker_started(0, 102, 1, 0);
  EXPECT_EQ(server(stats_->snapshot(104), "app", "h:1")->state, ServerState::up)
      << "the next worker in the slot starts with no verdict";
}

std::size_t resident_pages(StatsTable::Segment segment) {
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> in((segment.size + page - 1) / page);
  if (::mincore(const_cast<void*>(segment.data), segment.size, in.data()) != 0) {
    return ~std::size_t{0};
  }
  std::size_t n = 0;
  for (unsigned char c : in) n += c & 1;
  return n;
}

// ~30 MiB of address space, of which a few workers and names touch a few pages; snapshots
// touch no more.
TEST_F(StatsTableTest, OnlyWhatIsUsedTakesMemory) {
  conf::Config cfg;
  conf::Upstream app;
  app.name = "app";
  app.servers = {server_at("h:1"), server_at("h:2")};
  cfg.upstreams = {app};
  cfg.proxies = {proxy_to("web", "app"), proxy_to("db", "10.0.0.1:5432")};
  stats_->register_config(cfg);
  for (std::size_t slot = 0; slot < 4; ++slot) {
    stats_->worker_started(slot, static_cast<pid_t>(100 + slot), 1, 0);
    stat_add(stats_->proxy_counters(slot, "db")->accepted);
    stat_add(stats_->server_counters(slot, "app", "h:2")->sessions);
  }
  stats_->fold(2);
  for (int i = 0; i < 3; ++i) (void)stats_->snapshot(0);
  const std::size_t pages =
      resident_pages(stats_->registry_segment()) + resident_pages(stats_->counters_segment());
  EXPECT_GT(stats_->counters_segment().size, std::size_t{20} << 20);
  EXPECT_LE(pages, 40u);
}

}  // namespace
}  // namespace ferry::worker
