// Parsing and printing of durations, sizes, addresses and access rules.
#include "conf/values.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cstring>
#include <limits>
#include <vector>

namespace ferry::conf {
namespace {

std::string quoted(std::string_view text) { return '"' + std::string(text) + '"'; }

bool parse_uint(std::string_view text, unsigned long long& out) {
  if (text.empty()) return false;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc{} && end == text.data() + text.size();
}

}  // namespace

Parsed<Msec> parse_duration(std::string_view text) {
  const std::string bad = quoted(text) + " is not a duration (use \"500ms\", \"5s\", \"1m\")";
  if (text == "0") return Msec{0};
  // One or more number+unit pairs: "90s", "1h30m".
  unsigned long long total = 0;
  std::size_t i = 0;
  if (text.empty()) return bad;
  while (i < text.size()) {
    std::size_t j = i;
    while (j < text.size() && text[j] >= '0' && text[j] <= '9') ++j;
    if (j == i) return bad;
    unsigned long long number = 0;
    // More digits than fit: certainly longer than the bound below.
    if (!parse_uint(text.substr(i, j - i), number)) number = ULLONG_MAX;
    std::size_t k = j;
    while (k < text.size() && text[k] >= 'a' && text[k] <= 'z') ++k;
    const std::string_view unit = text.substr(j, k - j);
    unsigned long long scale = 0;
    if (unit == "ms") scale = 1;
    else if (unit == "s") scale = 1000;
    else if (unit == "m") scale = 60'000;
    else if (unit == "h") scale = 3'600'000;
    else if (unit == "d") scale = 86'400'000;
    else return bad;
    constexpr unsigned long long kMax = 365ULL * 86'400'000;  // a year bounds every timeout
    if (number > kMax / scale || total + number * scale > kMax) {
      return quoted(text) + " is too long (at most 365d)";
    }
    total += number * scale;
    i = k;
  }
  return Msec{static_cast<Msec::rep>(total)};
}

Parsed<std::size_t> parse_size(std::string_view text) {
  const std::string bad = quoted(text) + " is not a size (use 16384, \"16k\", \"4m\")";
  if (text.empty()) return bad;
  unsigned long long scale = 1;
  std::string_view digits = text;
  switch (text.back()) {
    case 'k':
    case 'K': scale = 1ULL << 10; break;
    case 'm':
    case 'M': scale = 1ULL << 20; break;
    case 'g':
    case 'G': scale = 1ULL << 30; break;
    default: break;
  }
  if (scale != 1) digits.remove_suffix(1);
  unsigned long long number = 0;
  if (!parse_uint(digits, number)) return bad;
  if (number > std::numeric_limits<std::size_t>::max() / scale / 2) {
    return quoted(text) + " is too large";
  }
  return static_cast<std::size_t>(number * scale);
}

Parsed<Address> parse_address(std::string_view text, bool resolve) {
  const std::string bad =
      quoted(text) + " is not an address (use \"host:port\", \"[v6addr]:port\" or \"*:port\")";
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return bad;
  std::string_view host = text.substr(0, colon);
  const std::string_view port_text = text.substr(colon + 1);
  unsigned long long port = 0;
  if (!parse_uint(port_text, port)) return bad;
  if (port < 1 || port > 65535) return quoted(text) + ": port must be 1-65535";

  Address out;
  out.text = std::string(text);
  const auto port16 = htons(static_cast<std::uint16_t>(port));
  if (host == "*") {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = port16;
    sin.sin_addr.s_addr = htonl(INADDR_ANY);
    std::memcpy(&out.storage, &sin, sizeof sin);
    out.length = sizeof sin;
    return out;
  }
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return bad;
    const std::string v6(host.substr(1, host.size() - 2));
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = port16;
    if (inet_pton(AF_INET6, v6.c_str(), &sin6.sin6_addr) != 1) {
      return quoted(text) + ": \"" + v6 + "\" is not an IPv6 address";
    }
    std::memcpy(&out.storage, &sin6, sizeof sin6);
    out.length = sizeof sin6;
    return out;
  }
  if (host.find(':') != std::string_view::npos) {
    return quoted(text) + ": write IPv6 addresses in brackets, \"[v6addr]:port\"";
  }
  const std::string name(host);
  sockaddr_in sin{};
  if (inet_pton(AF_INET, name.c_str(), &sin.sin_addr) == 1) {
    sin.sin_family = AF_INET;
    sin.sin_port = port16;
    std::memcpy(&out.storage, &sin, sizeof sin);
    out.length = sizeof sin;
    return out;
  }
  if (!resolve) return out;
  auto all = resolve_all(out);
  if (auto* why = std::get_if<std::string>(&all)) return *why;
  const Address& first = std::get<std::vector<Address>>(all).front();
  out.storage = first.storage;
  out.length = first.length;
  return out;
}

bool is_host_name(std::string_view text) {
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  const std::string host(text.substr(0, colon));
  if (host == "*" || host.front() == '[') return false;
  in_addr v4;
  return inet_pton(AF_INET, host.c_str(), &v4) != 1;
}

Parsed<std::vector<Address>> resolve_all(const Address& address) {
  if (address.length != 0) return std::vector<Address>{address};
  const std::string_view text = address.text;
  const auto colon = text.rfind(':');
  const std::string name(text.substr(0, colon));
  unsigned long long port = 0;
  if (colon == std::string_view::npos || !parse_uint(text.substr(colon + 1), port)) {
    return quoted(text) + " is not an address";
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  const int rc = ::getaddrinfo(name.c_str(), nullptr, &hints, &result);
  if (rc != 0 || result == nullptr) {
    return quoted(text) + ": host \"" + name + "\" not found (" + ::gai_strerror(rc) + ")";
  }
  std::vector<Address> out;
  const auto port16 = htons(static_cast<std::uint16_t>(port));
  for (const addrinfo* ai = result; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    Address a;
    std::memcpy(&a.storage, ai->ai_addr, ai->ai_addrlen);
    a.length = ai->ai_addrlen;
    char host[INET6_ADDRSTRLEN] = {};
    if (ai->ai_family == AF_INET) {
      auto* sin = reinterpret_cast<sockaddr_in*>(&a.storage);
      sin->sin_port = port16;
      inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host);
      a.text = std::string(host) + ":" + std::to_string(port);
    } else {
      auto* sin6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
      sin6->sin6_port = port16;
      inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host);
      a.text = "[" + std::string(host) + "]:" + std::to_string(port);
    }
    const bool seen =
        std::any_of(out.begin(), out.end(), [&](const Address& o) { return o.same_endpoint(a); });
    if (!seen) out.push_back(std::move(a));
  }
  ::freeaddrinfo(result);
  if (out.empty()) return quoted(text) + ": host \"" + name + "\" has no IPv4 or IPv6 address";
  return out;
}

namespace {

// "all", an address, or address/prefix, as an allowing rule; `whole` is the text that messages
// quote and `bad` what they say when `what` has no address form at all.
Parsed<AccessRule> network(std::string_view what, std::string_view whole, const std::string& bad) {
  AccessRule rule;
  rule.text = std::string(whole);
  if (what == "all") {
    rule.all = true;
    return rule;
  }
  std::string addr(what);
  int prefix = -1;
  if (const auto slash = what.find('/'); slash != std::string_view::npos) {
    unsigned long long p = 0;
    if (!parse_uint(what.substr(slash + 1), p)) return bad;
    prefix = static_cast<int>(std::min<unsigned long long>(p, 1000));
    addr = std::string(what.substr(0, slash));
  }
  std::size_t bytes = 0;
  if (inet_pton(AF_INET, addr.c_str(), rule.addr) == 1) {
    rule.family = AF_INET;
    bytes = 4;
  } else if (inet_pton(AF_INET6, addr.c_str(), rule.addr) == 1) {
    rule.family = AF_INET6;
    bytes = 16;
  } else {
    return quoted(whole) + ": \"" + addr + "\" is not an IPv4 or IPv6 address";
  }
  const int max_prefix = static_cast<int>(bytes * 8);
  if (prefix == -1) prefix = max_prefix;
  if (prefix > max_prefix) {
    return quoted(whole) + ": prefix length must be 0-" + std::to_string(max_prefix);
  }
  rule.prefix = prefix;
  // Host bits are cleared, as nginx does, so "10.1.2.3/8" means 10.0.0.0/8.
  for (std::size_t i = 0; i < bytes; ++i) {
    const int keep = std::clamp(prefix - static_cast<int>(i * 8), 0, 8);
    rule.addr[i] &= static_cast<std::uint8_t>(0xff00 >> keep);
  }
  return rule;
}

}  // namespace

Parsed<AccessRule> parse_access_rule(std::string_view text) {
  const std::string bad = quoted(text) +
                          " is not an access rule (use \"allow 10.0.0.0/8\", \"deny ::1\", "
                          "\"deny all\")";
  const auto space = text.find(' ');
  if (space == std::string_view::npos) return bad;
  const std::string_view verb = text.substr(0, space);
  std::string_view what = text.substr(space + 1);
  while (!what.empty() && what.front() == ' ') what.remove_prefix(1);
  bool allow = true;
  if (verb == "allow") allow = true;
  else if (verb == "deny") allow = false;
  else return bad;
  Parsed<AccessRule> parsed = network(what, text, bad);
  if (auto* rule = std::get_if<AccessRule>(&parsed)) rule->allow = allow;
  return parsed;
}

Parsed<AccessRule> parse_network(std::string_view text) {
  Parsed<AccessRule> parsed = network(text, text,
                                      quoted(text) +
                                          " is not an address or a network (use "
                                          "\"10.0.0.0/8\", \"::1\", \"all\")");
  // A v4-mapped sender is matched as its IPv4 address (as set_real_ip_from does), so an entry
  // within ::ffff:0:0/96 is made the IPv4 one it names rather than one that never matches.
  auto* rule = std::get_if<AccessRule>(&parsed);
  static constexpr std::uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (rule != nullptr && rule->family == AF_INET6 && rule->prefix >= 96 &&
      std::memcmp(rule->addr, kMapped, sizeof kMapped) == 0) {
    rule->family = AF_INET;
    rule->prefix -= 96;
    std::memmove(rule->addr, rule->addr + 12, 4);
    std::memset(rule->addr + 4, 0, 12);
  }
  return parsed;
}

std::string format_duration(Msec value) {
  const auto ms = static_cast<unsigned long long>(value.count());
  if (ms == 0) return "0";
  struct Unit {
    unsigned long long scale;
    const char* name;
  };
  for (const Unit u :
       {Unit{86'400'000, "d"}, Unit{3'600'000, "h"}, Unit{60'000, "m"}, Unit{1000, "s"}}) {
    if (ms % u.scale == 0) return std::to_string(ms / u.scale) + u.name;
  }
  return std::to_string(ms) + "ms";
}

std::string format_size(std::size_t value) {
  if (value != 0) {
    if (value % (1ULL << 30) == 0) return std::to_string(value >> 30) + "g";
    if (value % (1ULL << 20) == 0) return std::to_string(value >> 20) + "m";
    if (value % (1ULL << 10) == 0) return std::to_string(value >> 10) + "k";
  }
  return std::to_string(value);
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

}  // namespace ferry::conf
