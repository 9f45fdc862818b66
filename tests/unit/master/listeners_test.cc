// Tests of master/listeners for the status endpoint's socket: opened beside the proxies', marked
// and pointed at its settings, handed to workers only when they ask for it, kept across reloads.
#include "master/listeners.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <string>
#include <variant>

#include <gtest/gtest.h>

#include "conf/values.h"

namespace ferry::master {
namespace {

// A port nothing listens on right now.
int free_port() {
  event::Listening probe;
  probe.address = *event::SocketAddress::parse_numeric("127.0.0.1:0");
  EXPECT_FALSE(event::open_listening(probe));
  return probe.address.port();
}

conf::Address address(int port) {
  return std::get<conf::Address>(conf::parse_address("127.0.0.1:" + std::to_string(port)));
}

conf::Config config(int proxy_port, int status_port) {
  conf::Config cfg;
  conf::Proxy px;
  px.name = "web";
  px.listen.push_back(address(proxy_port));
  px.upstream_address = address(1);
  cfg.proxies.push_back(px);
  if (status_port != 0) cfg.status = conf::StatusSettings{address(status_port), {}};
  return cfg;
}

const event::Listening* status_of(const std::vector<const event::Listening*>& list) {
  auto it = std::find_if(list.begin(), list.end(), [](const auto* ls) { return ls->status; });
  return it == list.end() ? nullptr : *it;
}

TEST(ListenersTest, TheStatusSocketIsMarkedAndGivenOnlyToWorkersThatAskForIt) {
  const int proxy_port = free_port();
  const int status_port = free_port();
  const conf::Config cfg = config(proxy_port, status_port);
  ListenerSet set;
  ASSERT_EQ(set.apply(cfg, 2), std::nullopt);
  EXPECT_EQ(set.size(), 2U);

  const auto plain = set.for_worker(0, 2);
  ASSERT_EQ(plain.size(), 1U);
  EXPECT_FALSE(plain[0]->status);
  EXPECT_EQ(plain[0]->data, &cfg.proxies[0]);

  for (int slot : {0, 1}) {  // shared: every worker has it
    const auto all = set.for_worker(slot, 2, true);
    ASSERT_EQ(all.size(), 2U);
    const event::Listening* st = status_of(all);
    ASSERT_NE(st, nullptr);
    EXPECT_EQ(st->data, &*cfg.status);
    EXPECT_EQ(st->address.port(), status_port);
    EXPECT_FALSE(st->reuseport);
  }
}

// What a forked worker keeps is what for_worker() names; the rest is closed.
TEST(ListenersTest, KeepForWorkerKeepsWhatForWorkerNamesAndClosesTheRest) {
  conf::Config cfg = config(free_port(), free_port());
  cfg.proxies[0].reuseport = true;
  ListenerSet set;
  ASSERT_EQ(set.apply(cfg, 2), std::nullopt);
  ASSERT_EQ(set.size(), 3U);  // two clones and the status socket
  const auto named = set.for_worker(1, 2);
  ASSERT_EQ(named.size(), 1U);
  const auto all = set.for_worker(0, 2, true);
  const auto kept = set.keep_for_worker(1, 2, /*with_status=*/false);
  ASSERT_EQ(kept.size(), 1U);
  EXPECT_EQ(kept[0], named[0]);
  EXPECT_TRUE(kept[0]->fd);
  for (const event::Listening* ls : all) EXPECT_FALSE(ls->fd) << ls->address.to_string();
}

TEST(ListenersTest, AReloadKeepsTheStatusSocketAndRemovingItClosesIt) {
  const int proxy_port = free_port();
  const int status_port = free_port();
  const conf::Config first = config(proxy_port, status_port);
  ListenerSet set;
  ASSERT_EQ(set.apply(first, 1), std::nullopt);
  const event::Listening* before = status_of(set.for_worker(0, 1, true));
  ASSERT_NE(before, nullptr);
  const int fd = before->fd.get();

  const conf::Config second = config(proxy_port, status_port);
  ASSERT_EQ(set.apply(second, 1), std::nullopt);
  set.close_removed();
  const event::Listening* after = status_of(set.for_worker(0, 1, true));
  ASSERT_NE(after, nullptr);
  EXPECT_EQ(after->fd.get(), fd) << "the same socket, never closed and reopened";
  EXPECT_EQ(after->data, &*second.status);

  const conf::Config third = config(proxy_port, 0);
  ASSERT_EQ(set.apply(third, 1), std::nullopt);
  set.close_removed();
  EXPECT_EQ(set.size(), 1U);
  EXPECT_EQ(status_of(set.for_worker(0, 1, true)), nullptr);
  // The port is free again.
  event::Listening again;
  again.address = *event::SocketAddress::parse_numeric("127.0.0.1:" + std::to_string(status_port));
  EXPECT_FALSE(event::open_listening(again));
}

TEST(ListenersTest, AnAddressMovedFromAProxyToTheStatusEndpointKeepsItsSocketAndChangesSides) {
  const int a = free_port();
  const int b = free_port();
  ListenerSet set;
  const conf::Config first = config(a, b);
  ASSERT_EQ(set.apply(first, 1), std::nullopt);
  const int fd_a = set.for_worker(0, 1)[0]->fd.get();

  const conf::Config swapped = config(b, a);
  ASSERT_EQ(set.apply(swapped, 1), std::nullopt);
  set.close_removed();
  const event::Listening* st = status_of(set.for_worker(0, 1, true));
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(st->fd.get(), fd_a);
  EXPECT_EQ(st->data, &*swapped.status);
  const auto plain = set.for_worker(0, 1);
  ASSERT_EQ(plain.size(), 1U);
  EXPECT_FALSE(plain[0]->status);
  EXPECT_EQ(plain[0]->address.port(), b);
  EXPECT_EQ(plain[0]->data, &swapped.proxies[0]);
}

TEST(ListenersTest, AStatusAddressThatCannotBeBoundFailsTheApplyAndSaysSo) {
  const int proxy_port = free_port();
  event::Listening taken;
  taken.address = *event::SocketAddress::parse_numeric("127.0.0.1:0");
  ASSERT_FALSE(event::open_listening(taken));
  const conf::Config cfg = config(proxy_port, taken.address.port());
  ListenerSet set;
  const auto why = set.apply(cfg, 1);
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("the status endpoint: cannot listen on"), std::string::npos) << *why;
  EXPECT_EQ(set.size(), 0U);
}

}  // namespace
}  // namespace ferry::master
