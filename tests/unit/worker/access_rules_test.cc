// Tests of worker/proxy/access_rules: nginx's first-match allow/deny over overlapping IPv4 and
// IPv6 CIDRs and v4-mapped clients, and a randomized comparison with a linear first-match scan.
#include "worker/proxy/access_rules.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <random>
#include <string>
#include <variant>
#include <vector>

#include <gtest/gtest.h>

#include "conf/values.h"

namespace ferry::worker {
namespace {

std::vector<conf::AccessRule> parse(std::initializer_list<const char*> texts) {
  std::vector<conf::AccessRule> out;
  for (const char* t : texts) {
    auto parsed = conf::parse_access_rule(t);
    if (auto* why = std::get_if<std::string>(&parsed)) {
      ADD_FAILURE() << *why;
      continue;
    }
    out.push_back(std::get<conf::AccessRule>(std::move(parsed)));
  }
  return out;
}

event::SocketAddress client(const std::string& ip) {
  const std::string text = ip.find(':') == std::string::npos ? ip + ":4000" : "[" + ip + "]:4000";
  auto a = event::SocketAddress::parse_numeric(text);
  if (!a) ADD_FAILURE() << "bad test address " << ip;
  return a.value_or(event::SocketAddress());
}

// "allow 1", "deny 0", "allow -" (no rule matched).
std::string verdict(AccessRules::Decision d) {
  return std::string(d.allowed ? "allow " : "deny ") + (d.rule < 0 ? "-" : std::to_string(d.rule));
}
std::string verdict(const AccessRules& r, const std::string& ip) {
  return verdict(r.check(client(ip)));
}

// Issue 17: accept_proxy_protocol_from is a list of networks; the relay trusts a sender that
// one of them matches (a rule index), and no other.
TEST(AccessRulesTest, TrustedSendersMatchByNetwork) {
  std::vector<conf::AccessRule> from;
  for (const char* t : {"127.0.0.1", "10.0.0.0/8", "::1", "2001:db8::/32"}) {
    from.push_back(std::get<conf::AccessRule>(conf::parse_network(t)));
  }
  const AccessRules senders(from, AccessRules::Mapped::always_v4);
  for (const char* ip : {"127.0.0.1", "10.200.3.4", "::1", "2001:db8:ffff::1", "::ffff:10.9.9.9"}) {
    EXPECT_GE(senders.check(client(ip)).rule, 0) << ip;
  }
  for (const char* ip : {"127.0.0.2", "11.0.0.1", "::2", "2001:db9::1", "::ffff:127.0.0.2"}) {
    EXPECT_EQ(senders.check(client(ip)).rule, -1) << ip;
  }
  const AccessRules all(std::vector{std::get<conf::AccessRule>(conf::parse_network("all"))},
                        AccessRules::Mapped::always_v4);
  EXPECT_EQ(all.check(client("203.0.113.1")).rule, 0);
  EXPECT_EQ(all.check(client("::ffff:203.0.113.1")).rule, 0);
  EXPECT_EQ(all.check(client("2001:db8::1")).rule, 0);
}

// Issue 17 review: a v4-mapped sender (an IPv4 balancer on a [::] listener) is matched as its
// IPv4 address whatever else the list holds, as set_real_ip_from does: "::/0" does not trust
// every IPv4 sender, and "::ffff:10.0.0.5" is the IPv4 10.0.0.5, not an entry ignored beside
// IPv4 ones. The access rules keep nginx's stream rule (IPv6 rules when there is no IPv4 one).
TEST(AccessRulesTest, TrustedSendersMatchV4MappedAsIPv4) {
  auto senders = [](std::initializer_list<const char*> texts) {
    std::vector<conf::AccessRule> from;
    for (const char* t : texts) from.push_back(std::get<conf::AccessRule>(conf::parse_network(t)));
    return AccessRules(from, AccessRules::Mapped::always_v4);
  };
  const AccessRules any_v6 = senders({"::/0"});
  EXPECT_EQ(any_v6.check(client("2001:db8::1")).rule, 0);
  EXPECT_EQ(any_v6.check(client("::ffff:203.0.113.1")).rule, -1);
  EXPECT_EQ(any_v6.check(client("203.0.113.1")).rule, -1);

  const AccessRules mapped_entry =
      senders({"192.0.2.0/24", "::ffff:10.0.0.5", "::ffff:10.1.0.0/112"});
  for (const char* ip : {"::ffff:10.0.0.5", "10.0.0.5", "::ffff:10.1.2.3", "10.1.2.3"}) {
    EXPECT_GE(mapped_entry.check(client(ip)).rule, 1) << ip;
  }
  EXPECT_EQ(mapped_entry.check(client("::ffff:10.0.0.6")).rule, -1);
  EXPECT_EQ(mapped_entry.check(client("::ffff:192.0.2.9")).rule, 0);

  const AccessRules every_v4 = senders({"::ffff:0:0/96"});
  EXPECT_EQ(every_v4.check(client("203.0.113.1")).rule, 0);
  EXPECT_EQ(every_v4.check(client("::ffff:203.0.113.1")).rule, 0);
  EXPECT_EQ(every_v4.check(client("2001:db8::1")).rule, -1);

  EXPECT_EQ(verdict(AccessRules(parse({"deny ::/0"})), "::ffff:203.0.113.1"), "deny 0");
}

TEST(AccessRulesTest, NoRulesAllowEveryone) {
  const AccessRules none;
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(verdict(none, "10.0.0.1"), "allow -");
  EXPECT_EQ(verdict(none, "::1"), "allow -");
  EXPECT_EQ(verdict(none, "::ffff:10.0.0.1"), "allow -");

  const std::vector<conf::AccessRule> empty;
  const AccessRules from_empty(empty);
  EXPECT_TRUE(from_empty.empty());
  EXPECT_EQ(from_empty.nodes(), 0u);
  EXPECT_EQ(verdict(from_empty, "2001:db8::1"), "allow -");
}

struct Case {
  const char* client;
  const char* want;
};

// Each client's verdict under the rules, as "allow 1", "deny 0" or "allow -".
void expect(std::initializer_list<const char*> rules, std::initializer_list<Case> cases) {
  const auto list = parse(rules);
  const AccessRules r(list);
  EXPECT_EQ(r.empty(), list.empty());
  for (const Case& c : cases) EXPECT_EQ(verdict(r, c.client), c.want) << "client " << c.client;
}

TEST(AccessRulesTest, FirstMatchWinsAmongNestedIpv4Cidrs) {
  expect({"deny 10.1.2.3", "allow 10.1.0.0/16", "deny 10.0.0.0/8", "allow all"},
         {{"10.1.2.3", "deny 0"},
          {"10.1.2.4", "allow 1"},
          {"10.1.255.255", "allow 1"},
          {"10.2.0.1", "deny 2"},
          {"10.0.0.0", "deny 2"},
          {"11.0.0.1", "allow 3"},
          {"9.255.255.255", "allow 3"},
          {"2001:db8::1", "allow 3"}});  // `all` covers the other family too
}

TEST(AccessRulesTest, AWiderRuleFirstHidesTheNarrowerOnesAfterIt) {
  expect({"deny 10.0.0.0/8", "allow 10.1.0.0/16", "allow 10.1.2.3"}, {{"10.1.2.3", "deny 0"},
                                                                      {"10.1.9.9", "deny 0"},
                                                                      {"11.0.0.1", "allow -"},
                                                                      {"::1", "allow -"}});
}

TEST(AccessRulesTest, FirstMatchWinsAmongNestedIpv6Cidrs) {
  expect({"allow 2001:db8::1", "deny 2001:db8::/32", "allow 2001::/16", "deny ::/0"},
         {{"2001:db8::1", "allow 0"},
          {"2001:db8::2", "deny 1"},
          {"2001:db8:ffff::1", "deny 1"},
          {"2001:db9::1", "allow 2"},
          {"2002::1", "deny 3"},
          {"::1", "deny 3"},
          {"10.0.0.1", "allow -"}});  // ::/0 is an IPv6 rule: IPv4 clients never meet it
}

TEST(AccessRulesTest, HostRoutesMatchOneAddressOnly) {
  expect({"deny 192.0.2.1/32", "deny 2001:db8::1/128", "allow 255.255.255.255",
          "allow ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "deny 2001:db8::/127"},
         {{"192.0.2.1", "deny 0"},
          {"192.0.2.0", "allow -"},
          {"192.0.2.2", "allow -"},
          {"192.0.2.129", "allow -"},
          {"2001:db8::1", "deny 1"},
          {"2001:db8::", "deny 4"},
          {"2001:db8::2", "allow -"},
          {"2001:db8:0:0:8000::1", "allow -"},
          {"255.255.255.255", "allow 2"},
          {"255.255.255.254", "allow -"},
          {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "allow 3"},
          {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", "allow -"},
          {"7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "allow -"}});
}

TEST(AccessRulesTest, ZeroPrefixCoversItsFamilyOnly) {
  expect({"allow 10.0.0.1", "deny 0.0.0.0/0", "allow ::1", "deny ::/0"},
         {{"10.0.0.1", "allow 0"},
          {"0.0.0.0", "deny 1"},
          {"255.255.255.255", "deny 1"},
          {"::1", "allow 2"},
          {"::", "deny 3"},
          {"fe80::1", "deny 3"}});
  // Host bits written in a rule are dropped, as nginx does: this is 10.0.0.0/8.
  expect({"deny 10.1.2.3/8"}, {{"10.200.0.1", "deny 0"}});
}

TEST(AccessRulesTest, DenyAllFirstRefusesEveryone) {
  expect({"deny all", "allow 10.0.0.1", "allow ::1", "allow all"}, {{"10.0.0.1", "deny 0"},
                                                                    {"::1", "deny 0"},
                                                                    {"::ffff:10.0.0.1", "deny 0"},
                                                                    {"2001:db8::1", "deny 0"}});
}

TEST(AccessRulesTest, AllAfterCidrsDecidesTheRest) {
  expect({"allow 192.168.0.0/16", "allow fd00::/8", "deny all", "allow 10.0.0.1"},
         {{"192.168.1.1", "allow 0"},
          {"fd12::1", "allow 1"},
          {"10.0.0.1", "deny 2"},  // the later allow is never reached
          {"fe80::1", "deny 2"}});
}

TEST(AccessRulesTest, V4MappedClientsMeetTheIpv4Rules) {
  // Only ::ffff:0:0/96 is mapped: the IPv4-compatible and NAT64 forms are plain IPv6.
  expect({"deny 10.0.0.0/8", "allow all"}, {{"::ffff:10.1.2.3", "deny 0"},
                                            {"::ffff:11.1.2.3", "allow 1"},
                                            {"::10.1.2.3", "allow 1"},
                                            {"64:ff9b::10.1.2.3", "allow 1"},
                                            {"::fffe:10.1.2.3", "allow 1"}});
}

TEST(AccessRulesTest, V4MappedClientsSkipIpv6RulesWhenThereAreIpv4Rules) {
  // nginx: with any IPv4 rule (or `all`), a mapped client is checked against those alone, even
  // when an earlier IPv6 rule spells its address out.
  expect({"deny ::ffff:0:0/96", "allow 10.0.0.0/8"},
         {{"::ffff:10.0.0.1", "allow 1"}, {"::ffff:11.0.0.1", "allow -"}, {"10.0.0.1", "allow 1"}});
}

TEST(AccessRulesTest, V4MappedClientsMeetIpv6RulesWhenThereIsNoIpv4Rule) {
  expect({"deny ::ffff:0:0/96", "allow ::/0"},
         {{"::ffff:10.0.0.1", "deny 0"}, {"2001:db8::1", "allow 1"}, {"10.0.0.1", "allow -"}});
  // `all` counts as an IPv4 rule too, so adding it sends mapped clients to the IPv4 side.
  expect({"deny ::ffff:0:0/96", "allow all"}, {{"::ffff:10.0.0.1", "allow 1"}});
}

TEST(AccessRulesTest, RawSockaddrsAndOtherFamilies) {
  const auto list = parse({"deny 127.0.0.0/8", "deny all"});
  const AccessRules r(list);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(0x7f000001);
  EXPECT_EQ(verdict(r.check(reinterpret_cast<const sockaddr*>(&sin))), "deny 0");
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  EXPECT_EQ(verdict(r.check(reinterpret_cast<const sockaddr*>(&sun))), "allow -");
  EXPECT_EQ(verdict(r.check(static_cast<const sockaddr*>(nullptr))), "allow -");
}

TEST(AccessRulesTest, CopiesDecideAlike) {
  const auto list = parse({"allow 10.0.0.0/8", "deny all"});
  AccessRules a(list);
  const AccessRules b = a;
  a = AccessRules();
  EXPECT_EQ(verdict(a, "192.0.2.1"), "allow -");
  EXPECT_EQ(verdict(b, "192.0.2.1"), "deny 1");
  EXPECT_EQ(verdict(b, "10.9.9.9"), "allow 0");
}

// ---- Randomized comparison with nginx's linear scan ----

// nginx's ngx_stream_access_module restated as plainly as possible: `all` joins both the IPv4 and
// the IPv6 list, each list is scanned in order, bit by bit.
class Reference {
 public:
  explicit Reference(const std::vector<conf::AccessRule>& rules) : rules_(rules) {
    for (std::size_t i = 0; i < rules.size(); ++i) {
      if (rules[i].all || rules[i].family == AF_INET) v4_.push_back(i);
      if (rules[i].all || rules[i].family == AF_INET6) v6_.push_back(i);
    }
  }

  AccessRules::Decision check(int family, const std::uint8_t* addr) const {
    if (family == AF_INET) return scan(v4_, addr);
    bool mapped = addr[10] == 0xff && addr[11] == 0xff;
    for (int i = 0; i < 10; ++i) mapped = mapped && addr[i] == 0;
    if (mapped && !v4_.empty()) return scan(v4_, addr + 12);
    return scan(v6_, addr);
  }

 private:
  static int bit(const std::uint8_t* a, int i) { return (a[i / 8] >> (7 - i % 8)) & 1; }

  AccessRules::Decision scan(const std::vector<std::size_t>& list, const std::uint8_t* a) const {
    for (std::size_t i : list) {
      const conf::AccessRule& r = rules_[i];
      bool match = true;
      for (int b = 0; !r.all && b < r.prefix; ++b) match = match && bit(a, b) == bit(r.addr, b);
      if (match) return {r.allow, static_cast<int>(i)};
    }
    return {};
  }

  const std::vector<conf::AccessRule>& rules_;
  std::vector<std::size_t> v4_;
  std::vector<std::size_t> v6_;
};

struct Probe {
  int family;
  std::uint8_t addr[16];
};

event::SocketAddress to_socket_address(const Probe& p) {
  if (p.family == AF_INET) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    std::memcpy(&sin.sin_addr, p.addr, 4);
    return event::SocketAddress(reinterpret_cast<const sockaddr*>(&sin), sizeof sin);
  }
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  std::memcpy(&sin6.sin6_addr, p.addr, 16);
  return event::SocketAddress(reinterpret_cast<const sockaddr*>(&sin6), sizeof sin6);
}

// Rule lists whose CIDRs nest and overlap: addresses come from a few bases per list with a
// random tail, prefixes cluster where they cut through those tails.
class Generator {
 public:
  explicit Generator(std::uint64_t seed) : rng_(seed) {}

  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  bool chance(int percent) { return uniform(0, 99) < percent; }

  void new_bases() {
    for (auto& b : bases_) {
      for (auto& byte : b) byte = static_cast<std::uint8_t>(uniform(0, 255));
    }
    // One IPv6 base is v4-mapped, so that IPv6 rules about mapped addresses come up.
    std::memset(bases_[0], 0, 10);
    bases_[0][10] = bases_[0][11] = 0xff;
    // Half the lists have no `all`: one early in a long list would decide most probes.
    all_permille_ = chance(50) ? 0 : 3;
  }

  void random_address(int family, std::uint8_t* out) {
    const int bytes = family == AF_INET ? 4 : 16;
    const std::uint8_t* base = bases_[uniform(0, kBases - 1)];
    // Keep a random number of the base's leading bits, randomize the rest.
    const int keep = uniform(0, bytes * 8);
    for (int i = 0; i < bytes; ++i) {
      const int k = std::clamp(keep - i * 8, 0, 8);
      const auto mask = static_cast<std::uint8_t>(0xff00 >> k);
      const auto noise = static_cast<std::uint8_t>(uniform(0, 255));
      // An IPv4 address takes the tail of the base, so it shares bits with the mapped base.
      const std::uint8_t b = base[bytes == 4 ? 12 + i : i];
      out[i] = static_cast<std::uint8_t>((b & mask) | (noise & ~mask));
    }
  }

  // Some rules are an earlier rule's network a few bits longer or shorter, or its sibling, so
  // that prefixes nest down to the last bit, where tries split.
  conf::AccessRule rule(int mode, const std::vector<conf::AccessRule>& earlier) {
    conf::AccessRule r;
    r.allow = chance(50);
    if (uniform(0, 999) < all_permille_) {
      r.all = true;
      r.text = r.allow ? "allow all" : "deny all";
      return r;
    }
    const conf::AccessRule& base =
        earlier.empty()
            ? r
            : earlier[static_cast<std::size_t>(uniform(0, static_cast<int>(earlier.size()) - 1))];
    if (!base.all && base.family != 0 && chance(20)) {
      r.family = base.family;
      const int max = r.family == AF_INET ? 32 : 128;
      std::memcpy(r.addr, base.addr, 16);
      for (int b = base.prefix; b < max; ++b) {
        if (chance(50)) flip(r.addr, b);
      }
      r.prefix = std::clamp(base.prefix + uniform(-2, 2), 0, max);
      if (r.prefix > 0 && chance(30)) flip(r.addr, r.prefix - 1);
    } else {
      r.family = mode == 0 ? AF_INET : mode == 1 ? AF_INET6 : (chance(50) ? AF_INET : AF_INET6);
      const int max = r.family == AF_INET ? 32 : 128;
      random_address(r.family, r.addr);
      r.prefix = chance(10) ? uniform(0, max) : uniform(max / 4, max);
      if (chance(15)) r.prefix = max;
    }
    const int max = r.family == AF_INET ? 32 : 128;
    for (int i = 0; i < max / 8; ++i) {
      const int keep = std::clamp(r.prefix - i * 8, 0, 8);
      r.addr[i] &= static_cast<std::uint8_t>(0xff00 >> keep);
    }
    char text[INET6_ADDRSTRLEN] = {};
    inet_ntop(r.family, r.addr, text, sizeof text);
    r.text = std::string(r.allow ? "allow " : "deny ") + text + "/" + std::to_string(r.prefix);
    return r;
  }

  // Random addresses, and addresses at the edges of the list's rules: inside with random host
  // bits, the first and last address, and one bit flipped just inside or outside the prefix.
  Probe probe(const std::vector<conf::AccessRule>& rules) {
    Probe p{};
    if (rules.empty() || chance(30)) {
      p.family = chance(50) ? AF_INET : AF_INET6;
      random_address(p.family, p.addr);
    } else {
      const conf::AccessRule& r =
          rules[static_cast<std::size_t>(uniform(0, static_cast<int>(rules.size()) - 1))];
      p.family = r.all ? AF_INET6 : r.family;
      const int max = p.family == AF_INET ? 32 : 128;
      std::memcpy(p.addr, r.addr, 16);
      switch (uniform(0, 3)) {
        case 0:  // the network's first address: as in the rule
          break;
        case 1:  // the last address
          for (int b = r.prefix; b < max; ++b) flip(p.addr, b);
          break;
        case 2:  // random host bits
          for (int b = r.prefix; b < max; ++b) {
            if (chance(50)) flip(p.addr, b);
          }
          break;
        default:  // one bit around the prefix's end
          flip(p.addr, std::clamp(r.prefix - 1 + uniform(0, 2), 0, max - 1));
      }
    }
    // Some IPv4 probes arrive v4-mapped, as on a dual-stack listener.
    if (p.family == AF_INET && chance(25)) {
      std::memmove(p.addr + 12, p.addr, 4);
      std::memset(p.addr, 0, 10);
      p.addr[10] = p.addr[11] = 0xff;
      p.family = AF_INET6;
    }
    return p;
  }

 private:
  static constexpr int kBases = 6;
  static void flip(std::uint8_t* a, int b) { a[b / 8] ^= static_cast<std::uint8_t>(0x80 >> b % 8); }

  std::mt19937_64 rng_;
  std::uint8_t bases_[kBases][16]{};
  int all_permille_ = 0;
};

std::string describe(const Probe& p) {
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(p.family, p.addr, text, sizeof text);
  return text;
}

TEST(AccessRulesTest, AgreesWithALinearFirstMatchScan) {
  Generator gen(20'261'122);
  int lists = 0;
  long probes = 0;
  long mismatches = 0;
  std::string first;
  for (; lists < 3000; ++lists) {
    gen.new_bases();
    const int size = gen.chance(30) ? gen.uniform(0, 8) : gen.uniform(0, 600);
    const int mode = gen.uniform(0, 2);  // IPv4 only, IPv6 only, both
    std::vector<conf::AccessRule> list;
    for (int i = 0; i < size; ++i) list.push_back(gen.rule(mode, list));
    const AccessRules trie(list);
    const Reference reference(list);
    EXPECT_EQ(trie.empty(), list.empty());
    EXPECT_LE(trie.nodes(), 2 * list.size() + 2);
    for (int i = 0; i < 60; ++i, ++probes) {
      const Probe p = gen.probe(list);
      const AccessRules::Decision want = reference.check(p.family, p.addr);
      const AccessRules::Decision got = trie.check(to_socket_address(p));
      if (got.allowed == want.allowed && got.rule == want.rule) continue;
      if (mismatches++ == 0) {
        first = "list " + std::to_string(lists) + " (" + std::to_string(list.size()) +
                " rules), client " + describe(p) + ": " + verdict(got) + ", want " + verdict(want) +
                (want.rule >= 0 ? " (" + list[want.rule].text + ")" : "");
      }
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << probes << " probes; first: " << first;
}

TEST(AccessRulesTest, FiveHundredIpv6HostRoutesStaySmall) {
  Generator gen(7);
  gen.new_bases();
  std::vector<conf::AccessRule> list;
  for (int i = 0; i < 500; ++i) {
    conf::AccessRule r;
    r.family = AF_INET6;
    r.prefix = 128;
    for (auto& byte : r.addr) byte = static_cast<std::uint8_t>(gen.uniform(0, 255));
    list.push_back(r);
  }
  const AccessRules r(list);
  // A node per bit would be ~60,000 here; the compressed trie needs under two per rule.
  EXPECT_LE(r.nodes(), 1001u);
  Probe p{AF_INET6, {}};
  std::memcpy(p.addr, list[499].addr, 16);
  EXPECT_EQ(verdict(r.check(to_socket_address(p))), "allow 499");
}

}  // namespace
}  // namespace ferry::worker
