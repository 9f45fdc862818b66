// Tests of conf/values: durations, sizes, addresses, access rules, and their printed forms.
#include "conf/values.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdint>
#include <cstring>

#include <gtest/gtest.h>

namespace ferry::conf {
namespace {

template <typename T>
T ok(const Parsed<T>& p) {
  if (const auto* why = std::get_if<std::string>(&p)) ADD_FAILURE() << *why;
  return std::holds_alternative<T>(p) ? std::get<T>(p) : T{};
}
template <typename T>
std::string why(const Parsed<T>& p) {
  if (std::holds_alternative<T>(p)) return "(parsed)";
  return std::get<std::string>(p);
}

TEST(DurationTest, ParsesEveryUnitAndCombinations) {
  EXPECT_EQ(ok(parse_duration("0")), Msec{0});
  EXPECT_EQ(ok(parse_duration("250ms")), Msec{250});
  EXPECT_EQ(ok(parse_duration("5s")), Msec{5000});
  EXPECT_EQ(ok(parse_duration("10m")), Msec{600'000});
  EXPECT_EQ(ok(parse_duration("1h")), Msec{3'600'000});
  EXPECT_EQ(ok(parse_duration("1d")), Msec{86'400'000});
  EXPECT_EQ(ok(parse_duration("1m30s")), Msec{90'000});
}

TEST(DurationTest, RejectsWithTheSpecMessage) {
  EXPECT_EQ(why(parse_duration("5x")), "\"5x\" is not a duration (use \"500ms\", \"5s\", \"1m\")");
  for (const char* bad : {"", "5", "s", "-5s", "5 s", "5S", "1.5s", "ms5"}) {
    EXPECT_NE(why(parse_duration(bad)).find("is not a duration"), std::string::npos) << bad;
  }
  EXPECT_NE(why(parse_duration("99999999999999999999s")).find("too long"), std::string::npos);
  EXPECT_NE(why(parse_duration("400d")).find("too long"), std::string::npos);
}

TEST(DurationTest, FormatsTheShortestExactForm) {
  EXPECT_EQ(format_duration(Msec{0}), "0");
  EXPECT_EQ(format_duration(Msec{500}), "500ms");
  EXPECT_EQ(format_duration(Msec{1500}), "1500ms");
  EXPECT_EQ(format_duration(Msec{30'000}), "30s");
  EXPECT_EQ(format_duration(Msec{90'000}), "90s");
  EXPECT_EQ(format_duration(Msec{600'000}), "10m");
  EXPECT_EQ(format_duration(Msec{7'200'000}), "2h");
  EXPECT_EQ(format_duration(Msec{86'400'000}), "1d");
  for (long ms : {1L, 999L, 61'000L, 3'660'000L, 90'000'000L}) {
    EXPECT_EQ(ok(parse_duration(format_duration(Msec{ms}))), Msec{ms}) << ms;
  }
}

TEST(SizeTest, ParsesBytesAndSuffixes) {
  EXPECT_EQ(ok(parse_size("512")), 512U);
  EXPECT_EQ(ok(parse_size("16k")), 16384U);
  EXPECT_EQ(ok(parse_size("16K")), 16384U);
  EXPECT_EQ(ok(parse_size("4m")), 4U << 20);
  EXPECT_EQ(ok(parse_size("1g")), 1U << 30);
  for (const char* bad : {"", "k", "16kb", "1.5k", "-1", "16q", " 16k"}) {
    EXPECT_NE(why(parse_size(bad)).find("is not a size"), std::string::npos) << bad;
  }
  EXPECT_EQ(format_size(16384), "16k");
  EXPECT_EQ(format_size(1000), "1000");
  EXPECT_EQ(format_size(4U << 20), "4m");
}

TEST(AddressTest, ParsesTheThreeFormsAndResolvesNames) {
  const Address v4 = ok(parse_address("127.0.0.1:8080"));
  ASSERT_EQ(v4.storage.ss_family, AF_INET);
  EXPECT_EQ(ntohs(reinterpret_cast<const sockaddr_in*>(&v4.storage)->sin_port), 8080);

  const Address any = ok(parse_address("*:80"));
  EXPECT_EQ(reinterpret_cast<const sockaddr_in*>(&any.storage)->sin_addr.s_addr, htonl(INADDR_ANY));
  EXPECT_TRUE(any.same_endpoint(ok(parse_address("0.0.0.0:80"))));

  const Address v6 = ok(parse_address("[::1]:443"));
  EXPECT_EQ(v6.storage.ss_family, AF_INET6);

  const Address named = ok(parse_address("localhost:9001"));
  EXPECT_TRUE(named.storage.ss_family == AF_INET || named.storage.ss_family == AF_INET6);
  EXPECT_EQ(named.text, "localhost:9001");
}

TEST(AddressTest, RejectsWithAReason) {
  EXPECT_NE(why(parse_address("127.0.0.1")).find("is not an address"), std::string::npos);
  EXPECT_NE(why(parse_address("127.0.0.1:0")).find("port must be 1-65535"), std::string::npos);
  EXPECT_NE(why(parse_address("127.0.0.1:65536")).find("port must be 1-65535"), std::string::npos);
  EXPECT_NE(why(parse_address("[::g]:80")).find("is not an IPv6 address"), std::string::npos);
  EXPECT_NE(why(parse_address("::1:80")).find("in brackets"), std::string::npos);
  EXPECT_NE(why(parse_address("no-such-host.invalid:80")).find("not found"), std::string::npos);
}

TEST(AccessRuleTest, ParsesAllowDenyCidrAndAll) {
  const AccessRule r = ok(parse_access_rule("allow 10.1.2.3/8"));
  EXPECT_TRUE(r.allow);
  EXPECT_EQ(r.family, AF_INET);
  EXPECT_EQ(r.prefix, 8);
  EXPECT_EQ(r.addr[0], 10);
  EXPECT_EQ(r.addr[1], 0) << "host bits must be cleared";
  const AccessRule host = ok(parse_access_rule("deny ::1"));
  EXPECT_FALSE(host.allow);
  EXPECT_EQ(host.family, AF_INET6);
  EXPECT_EQ(host.prefix, 128);
  EXPECT_TRUE(ok(parse_access_rule("deny all")).all);
  EXPECT_EQ(ok(parse_access_rule("allow 192.168.0.0/23")).addr[2], 0);
  EXPECT_EQ(ok(parse_access_rule("allow 192.168.3.0/23")).addr[2], 2);

  EXPECT_NE(why(parse_access_rule("permit all")).find("is not an access rule"), std::string::npos);
  EXPECT_NE(why(parse_access_rule("allow")).find("is not an access rule"), std::string::npos);
  EXPECT_NE(why(parse_access_rule("allow 1.2.3.4/33")).find("0-32"), std::string::npos);
  EXPECT_NE(why(parse_access_rule("allow ::/129")).find("0-128"), std::string::npos);
  EXPECT_NE(why(parse_access_rule("deny 1.2.3")).find("not an IPv4 or IPv6"), std::string::npos);
}

TEST(NetworkTest, ParsesAddressesNetworksAndAllAsAllowingRules) {
  const AccessRule net = ok(parse_network("10.1.2.3/8"));
  EXPECT_TRUE(net.allow);
  EXPECT_EQ(net.family, AF_INET);
  EXPECT_EQ(net.prefix, 8);
  EXPECT_EQ(net.addr[1], 0) << "host bits must be cleared";
  EXPECT_EQ(net.text, "10.1.2.3/8");
  EXPECT_EQ(ok(parse_network("::1")).prefix, 128);
  EXPECT_EQ(ok(parse_network("127.0.0.1")).prefix, 32);
  EXPECT_TRUE(ok(parse_network("all")).all);

  // Within ::ffff:0:0/96: the IPv4 network named, as written for -T.
  const AccessRule mapped = ok(parse_network("::ffff:10.1.2.3/120"));
  EXPECT_EQ(mapped.family, AF_INET);
  EXPECT_EQ(mapped.prefix, 24);
  const std::uint8_t ten_one_two[16] = {10, 1, 2};
  EXPECT_EQ(std::memcmp(mapped.addr, ten_one_two, sizeof ten_one_two), 0);
  EXPECT_EQ(mapped.text, "::ffff:10.1.2.3/120");
  EXPECT_EQ(ok(parse_network("::ffff:0:0/96")).family, AF_INET);
  EXPECT_EQ(ok(parse_network("::ffff:0:0/96")).prefix, 0);
  EXPECT_EQ(ok(parse_network("::ffff:0:0/95")).family, AF_INET6);
  EXPECT_EQ(ok(parse_access_rule("allow ::ffff:10.1.2.3")).family, AF_INET6)
      << "access rules keep their own rule";

  EXPECT_NE(why(parse_network("allow 10.0.0.0/8")).find("not an IPv4 or IPv6"), std::string::npos);
  EXPECT_NE(why(parse_network("1.2.3.4/33")).find("0-32"), std::string::npos);
  EXPECT_NE(why(parse_network("1.2.3.4/x")).find("is not an address or a network"),
            std::string::npos);
  EXPECT_NE(why(parse_network("")).find("not an IPv4 or IPv6"), std::string::npos);
}

TEST(EdgeTest, DurationZeroAndBounds) {
  EXPECT_EQ(ok(parse_duration("0")), Msec{0});
  EXPECT_EQ(ok(parse_duration("0s")), Msec{0});
  EXPECT_EQ(ok(parse_duration("0ms")), Msec{0});
  EXPECT_EQ(ok(parse_duration("365d")), Msec{365LL * 86'400'000});
  EXPECT_NE(why(parse_duration("365d1ms")).find("too long"), std::string::npos);
  EXPECT_NE(why(parse_duration("18446744073709551616ms")).find("too long"), std::string::npos);
}

TEST(EdgeTest, SizeZeroAndOverflow) {
  EXPECT_EQ(ok(parse_size("0")), 0U);
  EXPECT_EQ(ok(parse_size("0k")), 0U);
  EXPECT_NE(why(parse_size("18446744073709551616")).find("is not a size"), std::string::npos);
  EXPECT_NE(why(parse_size("9999999999999g")).find("too large"), std::string::npos);
}

TEST(EdgeTest, AddressPortsAndIpv6Forms) {
  EXPECT_EQ(ok(parse_address("127.0.0.1:1")).length, sizeof(sockaddr_in));
  EXPECT_EQ(ok(parse_address("127.0.0.1:65535")).length, sizeof(sockaddr_in));
  EXPECT_EQ(ok(parse_address("[::]:80")).storage.ss_family, AF_INET6);
  EXPECT_EQ(ok(parse_address("[::ffff:127.0.0.1]:80")).storage.ss_family, AF_INET6);
  EXPECT_EQ(ok(parse_address("[2001:db8::1]:443")).storage.ss_family, AF_INET6);
  EXPECT_NE(why(parse_address("[]:80")).find("is not an address"), std::string::npos);
  EXPECT_NE(why(parse_address("[::1]")).find("is not an address"), std::string::npos);
  EXPECT_NE(why(parse_address("[::1]:")).find("is not an address"), std::string::npos);
  EXPECT_NE(why(parse_address(":80")).find("is not an address"), std::string::npos);
  EXPECT_NE(why(parse_address("127.0.0.1:-1")).find("is not an address"), std::string::npos);
  EXPECT_NE(why(parse_address("127.0.0.1:99999999999999999999")).find("is not an address"),
            std::string::npos);
}

TEST(EdgeTest, CidrPrefixBounds) {
  const AccessRule all4 = ok(parse_access_rule("allow 0.0.0.0/0"));
  EXPECT_EQ(all4.prefix, 0);
  EXPECT_FALSE(all4.all) << "/0 is a network rule of one family, not \"all\"";
  EXPECT_EQ(ok(parse_access_rule("allow 1.2.3.4/0")).addr[0], 0) << "/0 clears every bit";
  const AccessRule host4 = ok(parse_access_rule("deny 1.2.3.4/32"));
  EXPECT_EQ(host4.prefix, 32);
  EXPECT_EQ(host4.addr[3], 4);
  const AccessRule all6 = ok(parse_access_rule("allow ::/0"));
  EXPECT_EQ(all6.prefix, 0);
  EXPECT_EQ(all6.family, AF_INET6);
  const AccessRule host6 = ok(parse_access_rule("allow 2001:db8::1/128"));
  EXPECT_EQ(host6.prefix, 128);
  EXPECT_EQ(host6.addr[15], 1);
  EXPECT_EQ(ok(parse_access_rule("allow 2001:db8::1/127")).addr[15], 0);
  EXPECT_NE(why(parse_access_rule("allow 1.2.3.4/")).find("is not an access rule"),
            std::string::npos);
  EXPECT_NE(why(parse_access_rule("allow 1.2.3.4/-1")).find("is not an access rule"),
            std::string::npos);
}

TEST(EditDistanceTest, CountsEdits) {
  EXPECT_EQ(edit_distance("worker_conections", "worker_connections"), 1U);
  EXPECT_EQ(edit_distance("", "abc"), 3U);
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3U);
}

}  // namespace
}  // namespace ferry::conf
