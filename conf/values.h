// Conversions from the configuration's text forms to typed values, and back for -T:
// durations ("250ms", "5s", "1h"), sizes (16384, "16k"), addresses, access rules.
// Each parse returns the value, or an error message saying what is wrong and what would do.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "conf/address.h"
#include "conf/config.h"

namespace ferry::conf {

template <typename T>
using Parsed = std::variant<T, std::string>;  // the value, or why the text is not one

Parsed<Msec> parse_duration(std::string_view text);
Parsed<std::size_t> parse_size(std::string_view text);
// "host:port", "[v6]:port", "*:port" (all IPv4). A host name is resolved here to its first
// address, or with `resolve` false left unresolved (length 0) for resolve_all().
Parsed<Address> parse_address(std::string_view text, bool resolve = true);
// Every address a parsed address stands for: itself when literal, else each address its host
// name resolves to (getaddrinfo: blocking), without repeats, each with its numeric text
// ("127.0.0.1:80", "[::1]:80"). An error says why the name did not resolve.
Parsed<std::vector<Address>> resolve_all(const Address& address);
// True when the host part of "host:port" is a name to resolve.
bool is_host_name(std::string_view text);
// "allow CIDR", "deny CIDR", "allow all", "deny all"; a bare address is a /32 or /128.
Parsed<AccessRule> parse_access_rule(std::string_view text);
// "10.0.0.0/8", "::1" (a /32 or /128), "all": an allowing rule without the verb, for lists of
// trusted addresses. An entry within ::ffff:0:0/96 comes back as the IPv4 network it names.
Parsed<AccessRule> parse_network(std::string_view text);

// The shortest exact form: "0", "250ms", "5s", "10m", "1h", "1d".
std::string format_duration(Msec value);
// "16k", "4m", "1g" when exact, else the byte count.
std::string format_size(std::size_t value);

// Levenshtein distance, for "did you mean" suggestions.
std::size_t edit_distance(std::string_view a, std::string_view b);

}  // namespace ferry::conf
