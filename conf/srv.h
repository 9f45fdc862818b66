// DNS SRV services for upstream servers: the query (glibc's libresolv, blocking — the loader calls
// it at load, the workers on their thread pool), the parse of its answer, and the endpoints the
// records give (target addresses with the records' ports, weights and priority classes).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"
#include "conf/values.h"

namespace ferry::conf {

struct SrvRecord {
  std::uint16_t priority = 0;
  std::uint16_t weight = 0;
  std::uint16_t port = 0;
  std::string target;  // lower case, no trailing dot

  bool operator==(const SrvRecord&) const = default;
};

struct SrvAnswer {
  std::vector<SrvRecord> records;  // as the answer lists them, "." targets left out
  // The addresses the additional section gives for names (lower case, no trailing dot), each
  // with port 0 and its numeric text without a port ("10.0.0.1", "::1").
  std::map<std::string, std::vector<Address>> additional;
};

// The SRV records and additional addresses of a DNS response in wire format. An error says why
// the message is not one (malformed, an error code, no SRV record in the answer).
Parsed<SrvAnswer> parse_srv_answer(std::span<const unsigned char> message);

// The addresses of a target name at `port`: getaddrinfo by default.
using TargetLookup =
    std::function<Parsed<std::vector<Address>>(const std::string& target, std::uint16_t port)>;

// The endpoints `answer`'s records stand for: each target's addresses (from the additional
// section when it has them, else from `lookup`) at the record's port, with the record's weight
// (0 counts as 1, as no weight means no preference; clamped to kMaxWeight), a backup when the
// record's priority is above the lowest one present. An address that two records give is taken
// once, from the record of lower priority. Targets that do not resolve are left out, and said in
// `skipped`; an error when no target resolves.
Parsed<std::vector<Endpoint>> endpoints_of(const SrvAnswer& answer, const TargetLookup& lookup,
                                           std::string* skipped = nullptr);

// Queries `service`'s SRV records (the resolver of /etc/resolv.conf, as getaddrinfo has it) and
// returns their endpoints (`skipped` as endpoints_of() has it). Blocking; safe to call from
// several threads at once.
Parsed<std::vector<Endpoint>> resolve_service(const std::string& service,
                                              std::string* skipped = nullptr);

// Whether `text` has the form of a service's SRV name: "_service._proto.domain".
bool is_service_name(std::string_view text);

}  // namespace ferry::conf
