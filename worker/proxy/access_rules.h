// AccessRules: a proxy's allow/deny list, decided as nginx's stream access module decides it
// (first match in order wins, none matching allows), looked up in a compressed trie per family.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "conf/config.h"
#include "event/socket_address.h"

namespace ferry::worker {

class AccessRules {
 public:
  // How a v4-mapped client (::ffff:a.b.c.d, an IPv4 client of a [::] listener) is matched.
  enum class Mapped {
    // nginx's stream access module: against the IPv4 rules when there is one ("all" included),
    // else against the IPv6 rules. The `access` rules' documented behaviour.
    v4_when_any,
    // nginx's set_real_ip_from (ngx_cidr_match): always as the IPv4 address, so "::/0" does not
    // take in every IPv4 sender. For accept_proxy_protocol_from, whose ::ffff:x/N entries
    // (N >= 96) parse_network has already made IPv4 ones.
    always_v4,
  };

  AccessRules() = default;  // no rules: everything allowed
  explicit AccessRules(std::span<const conf::AccessRule> rules,
                       Mapped mapped = Mapped::v4_when_any);

  struct Decision {
    bool allowed = true;
    int rule = -1;  // index of the matching rule, -1 when none matched
  };

  // AF_INET and AF_INET6 clients; any other family (or null) is allowed with rule -1.
  [[nodiscard]] Decision check(const sockaddr* sa) const noexcept;
  [[nodiscard]] Decision check(const event::SocketAddress& a) const noexcept {
    return check(a.get());
  }
  [[nodiscard]] bool empty() const noexcept { return allow_.empty(); }
  [[nodiscard]] std::size_t size() const noexcept { return allow_.size(); }
  // The trie nodes of both families, for sizing: at most 2 per rule plus the two roots.
  [[nodiscard]] std::size_t nodes() const noexcept { return v4_.size() + v6_.size(); }

 private:
  static constexpr std::int32_t kNone = INT32_MAX;  // no rule; above every index, for min()

  // An address or a prefix as 128 bits from the most significant; IPv4 uses the top 32.
  struct Key {
    std::uint64_t hi = 0;
    std::uint64_t lo = 0;
  };

  // Binary trie node whose edges skip the bits all keys below share, so a trie holds at most
  // 2n+1 nodes for n rules whatever their lengths (an uncompressed one: up to 128 per rule).
  struct Node {
    Key key;                           // the node's prefix, bits from `len` on zero
    std::int32_t child[2] = {-1, -1};  // by the bit at `len`
    std::int32_t rule = kNone;         // smallest index of a rule with exactly this prefix
    std::int32_t len = 0;
  };
  friend struct AccessTrie;  // building and walking a trie (access_rules.cc)

  [[nodiscard]] Decision decide(std::int32_t rule) const noexcept;

  std::vector<Node> v4_;  // empty when there are no IPv4 rules
  std::vector<Node> v6_;  // empty when there are no IPv6 rules
  std::int32_t first_all_ = kNone;
  // Whether a v4-mapped client is checked against the IPv4 rules (see Mapped).
  bool mapped_as_v4_ = false;
  std::vector<std::uint8_t> allow_;  // by rule index
};

}  // namespace ferry::worker
