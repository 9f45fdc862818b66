// session_listing: the client and filter words the operator writes, the request line a worker
// reads, and the master's reading of a worker's answer, which trusts none of it.
#include "worker/proxy/session_listing.h"

#include <gtest/gtest.h>

namespace ferry::worker {
namespace {

event::SocketAddress address(const std::string& text) {
  return *event::SocketAddress::parse_numeric(text);
}

TEST(ClientMatchTest, AnIpMatchesEveryPortAndAPortOnlyItself) {
  const auto ip = ClientMatch::parse("127.0.0.2");
  ASSERT_TRUE(ip);
  EXPECT_TRUE(ip->matches(address("127.0.0.2:5555")));
  EXPECT_TRUE(ip->matches(address("127.0.0.2:1")));
  EXPECT_FALSE(ip->matches(address("127.0.0.1:5555")));
  const auto with_port = ClientMatch::parse("127.0.0.2:5555");
  ASSERT_TRUE(with_port);
  EXPECT_TRUE(with_port->matches(address("127.0.0.2:5555")));
  EXPECT_FALSE(with_port->matches(address("127.0.0.2:5556")));
  const auto v6 = ClientMatch::parse("[::1]:80");
  ASSERT_TRUE(v6);
  EXPECT_TRUE(v6->matches(address("[::1]:80")));
  EXPECT_FALSE(v6->matches(address("127.0.0.1:80")));
  EXPECT_TRUE(ClientMatch::parse("::1"));
  EXPECT_TRUE(ClientMatch::parse("[::1]"));
  // A dual-stack socket's IPv4 client.
  EXPECT_TRUE(ip->matches(address("[::ffff:127.0.0.2]:9")));
}

TEST(ClientMatchTest, WhatIsNoAddressIsRefused) {
  for (const char* bad : {"", "x", "127.0.0.2:", "127.0.0.2:70000", "127.0.0.2:-1", "[::1",
                          "[::1]x", "[::1]:", "1.2.3", "host.example:80", "127.0.0.2:8 0"}) {
    EXPECT_FALSE(ClientMatch::parse(bad)) << bad;
  }
}

TEST(SessionFilterTest, WordsBecomeAFilterOrSayWhatIsWrong) {
  const std::vector<std::string_view> words = {"proxy",           "web",    "server",
                                               "app/10.0.0.1:80", "client", "127.0.0.2"};
  auto parsed = parse_session_filter(words, false);
  ASSERT_TRUE(std::holds_alternative<SessionFilter>(parsed));
  const auto& f = std::get<SessionFilter>(parsed);
  EXPECT_EQ(f.proxy, "web");
  EXPECT_EQ(f.upstream, "app");
  EXPECT_EQ(f.server, "10.0.0.1:80");
  EXPECT_TRUE(f.client);
  for (const std::vector<std::string_view>& bad :
       std::vector<std::vector<std::string_view>>{{"proxy"},
                                                  {"server", "app"},
                                                  {"server", "/x"},
                                                  {"server", "app/"},
                                                  {"client", "nope"},
                                                  {"colour", "red"},
                                                  {"proxy", "a", "proxy", "b"},
                                                  {"session", "3"}}) {
    EXPECT_TRUE(std::holds_alternative<std::string>(parse_session_filter(bad, false)))
        << bad.front();
  }
  EXPECT_TRUE(std::holds_alternative<SessionFilter>(
      parse_session_filter(std::vector<std::string_view>{"session", "3"}, true)));
  EXPECT_TRUE(std::holds_alternative<std::string>(
      parse_session_filter(std::vector<std::string_view>{"session", "0"}, true)));
}

TEST(SessionRequestTest, OnlyListAndKillAreRequests) {
  EXPECT_TRUE(std::holds_alternative<SessionRequest>(parse_session_request("list")));
  const auto kill = parse_session_request("kill session 7");
  ASSERT_TRUE(std::holds_alternative<SessionRequest>(kill));
  EXPECT_EQ(std::get<SessionRequest>(kill).verb, SessionVerb::kill);
  EXPECT_EQ(std::get<SessionRequest>(kill).filter.serial, 7u);
  EXPECT_TRUE(std::holds_alternative<std::string>(parse_session_request("")));
  EXPECT_TRUE(std::holds_alternative<std::string>(parse_session_request("drop all")));
}

TEST(SessionAnswerTest, AHalfWrittenAnswerIsNotWhole) {
  EXPECT_FALSE(parse_session_answer(""));
  EXPECT_FALSE(parse_session_answer("list\n"));
  EXPECT_FALSE(parse_session_answer("sessions\n1\tweb\t127.0.0.1:5\t-\t-\trelaying\t10\t1\t2\n"));
  const auto empty = parse_session_answer("sessions\nend\n");
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->sessions.empty());
  EXPECT_FALSE(empty->killed);
}

TEST(SessionAnswerTest, GarbageLinesAreSkippedNeverTrusted) {
  const auto a = parse_session_answer(
      "sessions\n"
      "1\tweb\t127.0.0.1:5\tsrv\t10.0.0.1:80\trelaying\t1500\t10\t20\n"
      "garbage\n"
      "2\tweb\t127.0.0.1:6\t-\t-\tconnecting\tx\t0\t0\n"
      "3\tweb\t127.0.0.1:7\t-\t-\tconnecting\t5\t0\t0\textra\n"
      "99999999999999999999999\tweb\tc\t-\t-\tp\t1\t1\t1\n"
      "\n"
      "4\talt\t127.0.0.1:8\t-\t-\tconnecting\t5\t0\t0\n"
      "killed\tmany\n"
      "end\n");
  ASSERT_TRUE(a);
  ASSERT_EQ(a->sessions.size(), 2u);
  EXPECT_EQ(a->sessions[0].serial, 1u);
  EXPECT_EQ(a->sessions[0].server, "srv");
  EXPECT_EQ(a->sessions[0].server_address, "10.0.0.1:80");
  EXPECT_EQ(a->sessions[0].age_ms, 1500u);
  EXPECT_EQ(a->sessions[0].bytes_to_client, 20u);
  EXPECT_EQ(a->sessions[1].proxy, "alt");
  EXPECT_EQ(a->sessions[1].server, "");
  EXPECT_EQ(a->skipped, 6u);
  EXPECT_FALSE(a->killed);
  const auto k = parse_session_answer("sessions\nkilled\t3\nend\n");
  ASSERT_TRUE(k);
  EXPECT_EQ(k->killed, 3u);
}

}  // namespace
}  // namespace ferry::worker
