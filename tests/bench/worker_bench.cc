// Micro-benchmarks of worker/: the access-rule check of an accepted client, by AccessRules' trie
// and by nginx's linear scan of the same rules. Printed, never asserted (.ci/run runs them
// briefly).
#include <netinet/in.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "event/socket_address.h"
#include "worker/proxy/access_rules.h"

namespace ferry::worker {
namespace {

// The rules as nginx's stream access module keeps and scans them: address and mask per rule,
// `all` in both lists, the first match wins.
class LinearRules {
 public:
  explicit LinearRules(const std::vector<conf::AccessRule>& rules) {
    for (std::size_t i = 0; i < rules.size(); ++i) {
      const conf::AccessRule& r = rules[i];
      const int index = static_cast<int>(i);
      if (r.all || r.family == AF_INET) {
        std::uint32_t addr = 0;
        std::memcpy(&addr, r.addr, 4);
        const std::uint32_t mask = r.all || r.prefix == 0 ? 0 : ~0u << (32 - r.prefix);
        v4_.push_back({htonl(mask), r.all ? 0 : addr, r.allow, index});
      }
      if (r.all || r.family == AF_INET6) {
        Rule6 x{{}, {}, r.allow, index};
        for (int b = 0; !r.all && b < r.prefix; ++b) x.mask[b / 8] |= 0x80 >> b % 8;
        if (!r.all) std::memcpy(x.addr, r.addr, 16);
        v6_.push_back(x);
      }
    }
  }

  AccessRules::Decision check(const sockaddr* sa) const noexcept {
    if (sa->sa_family == AF_INET) {
      const std::uint32_t a = reinterpret_cast<const sockaddr_in*>(sa)->sin_addr.s_addr;
      for (const Rule4& r : v4_) {
        if ((a & r.mask) == r.addr) return {r.allow, r.index};
      }
      return {};
    }
    if (sa->sa_family == AF_INET6) {
      const std::uint8_t* p = reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr.s6_addr;
      for (const Rule6& r : v6_) {
        int n = 0;
        while (n < 16 && (p[n] & r.mask[n]) == r.addr[n]) ++n;
        if (n == 16) return {r.allow, r.index};
      }
    }
    return {};
  }

 private:
  struct Rule4 {
    std::uint32_t mask;
    std::uint32_t addr;
    bool allow;
    int index;
  };
  struct Rule6 {
    std::uint8_t addr[16];
    std::uint8_t mask[16];
    bool allow;
    int index;
  };
  std::vector<Rule4> v4_;
  std::vector<Rule6> v6_;
};

// range(0) rules of family range(1) (4 or 6); with range(2) the last one is the only rule
// matching the clients (198.51.100.0/24, 2001:db8:1::/48), else none matches. The others are
// random CIDRs elsewhere, as a list of blocked networks would be.
struct Setup {
  std::vector<conf::AccessRule> rules;
  std::vector<event::SocketAddress> clients;
};

Setup make_setup(const benchmark::State& state) {
  const auto n = static_cast<int>(state.range(0));
  const bool v4 = state.range(1) == 4;
  const bool match = state.range(2) != 0;
  std::mt19937 rng(12345);
  auto byte = [&] { return static_cast<std::uint8_t>(rng()); };
  Setup s;
  for (int i = 0; i < n - (match ? 1 : 0); ++i) {
    conf::AccessRule r;
    r.allow = false;
    r.family = v4 ? AF_INET : AF_INET6;
    const int max = v4 ? 32 : 128;
    r.prefix = static_cast<int>(rng() % (max - max / 4 + 1)) + max / 4;
    for (int k = 0; k < max / 8; ++k) r.addr[k] = byte();
    r.addr[0] = v4 ? (r.addr[0] == 198 ? 199 : r.addr[0]) : (r.addr[0] == 0x20 ? 0x21 : r.addr[0]);
    for (int k = 0; k < max / 8; ++k) {
      const int keep = std::clamp(r.prefix - k * 8, 0, 8);
      r.addr[k] &= static_cast<std::uint8_t>(0xff00 >> keep);
    }
    s.rules.push_back(r);
  }
  if (match) {
    conf::AccessRule r;
    r.family = v4 ? AF_INET : AF_INET6;
    const std::uint8_t net4[] = {198, 51, 100, 0};
    const std::uint8_t net6[] = {0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01};
    if (v4) {
      std::memcpy(r.addr, net4, 4);
    } else {
      std::memcpy(r.addr, net6, 6);
    }
    r.prefix = v4 ? 24 : 48;
    s.rules.push_back(r);
  }
  for (int i = 0; i < 256; ++i) {
    if (v4) {
      sockaddr_in sin{};
      sin.sin_family = AF_INET;
      const std::uint8_t a[] = {198, 51, 100, static_cast<std::uint8_t>(i)};
      std::memcpy(&sin.sin_addr, a, 4);
      s.clients.emplace_back(reinterpret_cast<const sockaddr*>(&sin), sizeof sin);
    } else {
      sockaddr_in6 sin6{};
      sin6.sin6_family = AF_INET6;
      const std::uint8_t a[] = {0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01};
      std::memcpy(&sin6.sin6_addr, a, 6);
      for (int k = 8; k < 16; ++k) sin6.sin6_addr.s6_addr[k] = byte();
      s.clients.emplace_back(reinterpret_cast<const sockaddr*>(&sin6), sizeof sin6);
    }
  }
  return s;
}

template <typename Rules>
void run(benchmark::State& state, const Rules& rules, const Setup& s) {
  // The two must decide alike, or the comparison means nothing.
  const AccessRules trie(s.rules);
  for (const auto& c : s.clients) {
    const auto want = trie.check(c);
    const auto got = rules.check(c.get());
    if (got.allowed != want.allowed || got.rule != want.rule) {
      state.SkipWithError("the trie and the linear scan disagree");
      return;
    }
  }
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(rules.check(s.clients[i++ & 255].get()));
  }
  state.SetLabel(std::string(state.range(1) == 4 ? "v4" : "v6") +
                 (state.range(2) != 0 ? ", last rule matches" : ", no rule matches"));
}

void BM_AccessRulesTrie(benchmark::State& state) {
  const Setup s = make_setup(state);
  run(state, AccessRules(s.rules), s);
}

void BM_AccessRulesLinear(benchmark::State& state) {
  const Setup s = make_setup(state);
  run(state, LinearRules(s.rules), s);
}

void access_args(benchmark::internal::Benchmark* b) {
  for (int family : {4, 6}) {
    for (int match : {1, 0}) {
      for (int n : {1, 10, 100, 500}) b->Args({n, family, match});
    }
  }
  b->ArgNames({"rules", "family", "match"});
}
BENCHMARK(BM_AccessRulesTrie)->Apply(access_args);
BENCHMARK(BM_AccessRulesLinear)->Apply(access_args);

}  // namespace
}  // namespace ferry::worker

BENCHMARK_MAIN();
