// AccessRules: building the per-family tries from the configured rules, and the lookup.
#include "worker/proxy/access_rules.h"

#include <netinet/in.h>

#include <algorithm>
#include <bit>

namespace ferry::worker {

struct AccessTrie {
  using Key = AccessRules::Key;
  using Node = AccessRules::Node;
  static constexpr std::int32_t kNone = AccessRules::kNone;
  // Two nodes a rule at most: 500 IPv6 rules fit in 32 KiB.
  static_assert(sizeof(Node) == 32);

  static std::uint64_t load_be(const std::uint8_t* p, int bytes) noexcept {
    std::uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v = (v << 8) | p[i];
    return v;
  }

  // How many leading bits a and b share (128 when equal).
  static int common_prefix(const Key& a, const Key& b) noexcept {
    if (a.hi != b.hi) return std::countl_zero(a.hi ^ b.hi);
    return 64 + std::countl_zero(a.lo ^ b.lo);
  }

  static int bit(const Key& k, int i) noexcept {
    return static_cast<int>(i < 64 ? (k.hi >> (63 - i)) & 1 : (k.lo >> (127 - i)) & 1);
  }

  static Key masked(const Key& k, int len) noexcept {
    const std::uint64_t all = ~std::uint64_t{0};
    const std::uint64_t hi = len >= 64 ? all : ~(all >> len);
    const std::uint64_t lo = len <= 64 ? 0 : len >= 128 ? all : ~(all >> (len - 64));
    return {k.hi & hi, k.lo & lo};
  }

  static Key v4_key(const std::uint8_t* p) noexcept { return {load_be(p, 4) << 32, 0}; }
  static Key v6_key(const std::uint8_t* p) noexcept { return {load_be(p, 8), load_be(p + 8, 8)}; }

  static void insert(std::vector<Node>& trie, Key key, int len, std::int32_t rule) {
    key = masked(key, len);
    // The root holds the empty prefix, so every other node has a parent to hang a split from.
    if (trie.empty()) trie.push_back(Node{});
    std::int32_t at = 0;
    std::int32_t parent = -1;
    int side = 0;
    for (;;) {
      const Node n = trie[at];  // a copy: push_back below may move the vector
      const int common = std::min({len, n.len, common_prefix(key, n.key)});
      if (common == n.len) {
        if (len == n.len) {
          trie[at].rule = std::min(n.rule, rule);
          return;
        }
        const int b = bit(key, n.len);
        if (n.child[b] < 0) {
          trie[at].child[b] = static_cast<std::int32_t>(trie.size());
          trie.push_back(Node{key, {-1, -1}, rule, len});
          return;
        }
        parent = at;
        side = b;
        at = n.child[b];
        continue;
      }
      // The new prefix leaves n's path above n: it becomes n's parent, or a fork above n gets
      // n on one side and the new prefix on the other.
      const auto above = static_cast<std::int32_t>(trie.size());
      if (common == len) {
        Node m{key, {-1, -1}, rule, len};
        m.child[bit(n.key, len)] = at;
        trie.push_back(m);
      } else {
        Node fork{masked(key, common), {-1, -1}, kNone, common};
        fork.child[bit(n.key, common)] = at;
        fork.child[bit(key, common)] = above + 1;
        trie.push_back(fork);
        trie.push_back(Node{key, {-1, -1}, rule, len});
      }
      trie[parent].child[side] = above;
      return;
    }
  }

  static std::int32_t lookup(const std::vector<Node>& trie, Key addr) noexcept {
    // Every rule containing addr sits on addr's path, and a node off the path ends the walk:
    // at most one node per bit, in practice about log2(rules).
    std::int32_t best = kNone;
    std::int32_t at = trie.empty() ? -1 : 0;
    while (at >= 0) {
      const Node& n = trie[static_cast<std::size_t>(at)];
      if (common_prefix(addr, n.key) < n.len) break;
      best = std::min(best, n.rule);
      if (n.len >= 128) break;
      at = n.child[bit(addr, n.len)];
    }
    return best;
  }
};

AccessRules::AccessRules(std::span<const conf::AccessRule> rules, Mapped mapped)
    : mapped_as_v4_(mapped == Mapped::always_v4) {
  std::size_t v4 = 0;
  std::size_t v6 = 0;
  for (const conf::AccessRule& r : rules) {
    if (r.all) continue;
    if (r.family == AF_INET) ++v4;
    if (r.family == AF_INET6) ++v6;
  }
  // Exactly what the worst case needs, so that nothing is reallocated or left over.
  if (v4 > 0) v4_.reserve(2 * v4 + 1);
  if (v6 > 0) v6_.reserve(2 * v6 + 1);
  allow_.reserve(rules.size());
  for (std::size_t i = 0; i < rules.size(); ++i) {
    const conf::AccessRule& r = rules[i];
    const auto index = static_cast<std::int32_t>(i);
    allow_.push_back(r.allow ? 1 : 0);
    if (r.all) {
      first_all_ = std::min(first_all_, index);
      mapped_as_v4_ = true;
    } else if (r.family == AF_INET) {
      AccessTrie::insert(v4_, AccessTrie::v4_key(r.addr), std::clamp(r.prefix, 0, 32), index);
      mapped_as_v4_ = true;
    } else if (r.family == AF_INET6) {
      AccessTrie::insert(v6_, AccessTrie::v6_key(r.addr), std::clamp(r.prefix, 0, 128), index);
    }
    // Another family cannot come out of the parser; such a rule would simply never match.
  }
}

AccessRules::Decision AccessRules::decide(std::int32_t rule) const noexcept {
  if (rule == kNone) return {};
  return {allow_[static_cast<std::size_t>(rule)] != 0, rule};
}

AccessRules::Decision AccessRules::check(const sockaddr* sa) const noexcept {
  if (sa == nullptr) return {};
  if (sa->sa_family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(sa);
    const Key k = AccessTrie::v4_key(reinterpret_cast<const std::uint8_t*>(&sin->sin_addr));
    return decide(std::min(first_all_, AccessTrie::lookup(v4_, k)));
  }
  if (sa->sa_family == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(sa);
    const Key k = AccessTrie::v6_key(sin6->sin6_addr.s6_addr);
    const bool v4_mapped = k.hi == 0 && (k.lo >> 32) == 0xffff;  // ::ffff:a.b.c.d
    if (v4_mapped && mapped_as_v4_) {
      return decide(std::min(first_all_, AccessTrie::lookup(v4_, Key{k.lo << 32, 0})));
    }
    return decide(std::min(first_all_, AccessTrie::lookup(v6_, k)));
  }
  return {};
}

}  // namespace ferry::worker
