// SRV services: res_nquery on a resolver state of the call's own (res_ninit/res_nclose: nothing
// shared between the threads), the answer read with ns_initparse/ns_parserr/dn_expand.
#include "conf/srv.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <resolv.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <memory>

namespace ferry::conf {
namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

// `ip` (port 0) at `port`, with its numeric "ip:port" text as resolve_all() writes it.
Address at_port(const Address& ip, std::uint16_t port) {
  Address a = ip;
  const auto port16 = htons(port);
  if (a.storage.ss_family == AF_INET6) {
    reinterpret_cast<sockaddr_in6*>(&a.storage)->sin6_port = port16;
    a.text = "[" + ip.text + "]:" + std::to_string(port);
  } else {
    reinterpret_cast<sockaddr_in*>(&a.storage)->sin_port = port16;
    a.text = ip.text + ":" + std::to_string(port);
  }
  return a;
}

// An A or AAAA record's address (port 0), or nothing for other records or a bad length.
bool address_of(const ns_rr& rr, Address& out) {
  char text[INET6_ADDRSTRLEN] = {};
  if (ns_rr_type(rr) == ns_t_a && ns_rr_rdlen(rr) == 4) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    std::memcpy(&sin.sin_addr, ns_rr_rdata(rr), 4);
    std::memcpy(&out.storage, &sin, sizeof sin);
    out.length = sizeof sin;
    inet_ntop(AF_INET, &sin.sin_addr, text, sizeof text);
  } else if (ns_rr_type(rr) == ns_t_aaaa && ns_rr_rdlen(rr) == 16) {
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    std::memcpy(&sin6.sin6_addr, ns_rr_rdata(rr), 16);
    std::memcpy(&out.storage, &sin6, sizeof sin6);
    out.length = sizeof sin6;
    inet_ntop(AF_INET6, &sin6.sin6_addr, text, sizeof text);
  } else {
    return false;
  }
  out.text = text;
  return true;
}

const char* rcode_name(int rcode) {
  switch (rcode) {
    case ns_r_formerr: return "FORMERR";
    case ns_r_servfail: return "SERVFAIL";
    case ns_r_nxdomain: return "NXDOMAIN";
    case ns_r_notimpl: return "NOTIMP";
    case ns_r_refused: return "REFUSED";
    default: return "an error";
  }
}

Parsed<std::vector<Address>> lookup_by_name(const std::string& target, std::uint16_t port) {
  Address unresolved;
  unresolved.text = target + ":" + std::to_string(port);
  return resolve_all(unresolved);
}

}  // namespace

Parsed<SrvAnswer> parse_srv_answer(std::span<const unsigned char> message) {
  ns_msg msg{};
  if (ns_initparse(message.data(), static_cast<int>(message.size()), &msg) != 0) {
    return std::string("a malformed DNS response");
  }
  if (const int rcode = ns_msg_getflag(msg, ns_f_rcode); rcode != ns_r_noerror) {
    return std::string("the DNS server answered ") + rcode_name(rcode);
  }
  SrvAnswer out;
  bool any = false;  // an SRV record, "." targets included
  for (int i = 0; i < ns_msg_count(msg, ns_s_an); ++i) {
    ns_rr rr{};
    if (ns_parserr(&msg, ns_s_an, i, &rr) != 0) return std::string("a malformed DNS response");
    // CNAMEs on the way to the records, or anything else the server adds: not ours.
    if (ns_rr_type(rr) != ns_t_srv || ns_rr_class(rr) != ns_c_in) continue;
    // Priority, weight, port (16 bits each), then the target: at least the root's one byte.
    if (ns_rr_rdlen(rr) < 7) return std::string("a malformed SRV record");
    const unsigned char* rd = ns_rr_rdata(rr);
    SrvRecord r;
    r.priority = static_cast<std::uint16_t>(ns_get16(rd));
    r.weight = static_cast<std::uint16_t>(ns_get16(rd + 2));
    r.port = static_cast<std::uint16_t>(ns_get16(rd + 4));
    char name[NS_MAXDNAME] = {};
    const int used = dn_expand(ns_msg_base(msg), ns_msg_end(msg), rd + 6, name, sizeof name);
    // The name must end within the record's data (a compression pointer may lead elsewhere).
    if (used < 0 || used > ns_rr_rdlen(rr) - 6) return std::string("a malformed SRV record");
    any = true;
    r.target = lower(name);
    // "." (dn_expand writes it as ""): the service is decidedly not offered there (RFC 2782).
    if (r.target.empty() || r.port == 0) continue;
    out.records.push_back(std::move(r));
  }
  if (!any) return std::string("no SRV records");
  for (int i = 0; i < ns_msg_count(msg, ns_s_ar); ++i) {
    ns_rr rr{};
    if (ns_parserr(&msg, ns_s_ar, i, &rr) != 0) break;  // the records above stand on their own
    Address a;
    if (ns_rr_class(rr) != ns_c_in || !address_of(rr, a)) continue;
    auto& list = out.additional[lower(ns_rr_name(rr))];
    const bool seen =
        std::any_of(list.begin(), list.end(), [&](const Address& o) { return o.same_endpoint(a); });
    if (!seen) list.push_back(std::move(a));
  }
  return out;
}

Parsed<std::vector<Endpoint>> endpoints_of(const SrvAnswer& answer, const TargetLookup& lookup,
                                           std::string* skipped) {
  if (answer.records.empty()) return std::string("no usable SRV records (every target is \".\")");
  std::vector<const SrvRecord*> records;
  for (const SrvRecord& r : answer.records) records.push_back(&r);
  // Lower priorities first: an address two records give is taken from the preferred one.
  std::stable_sort(records.begin(), records.end(), [](const SrvRecord* a, const SrvRecord* b) {
    return a->priority < b->priority;
  });
  const std::uint16_t primary = records.front()->priority;
  std::vector<Endpoint> out;
  std::string failures;
  for (const SrvRecord* r : records) {
    std::vector<Address> addresses;
    if (const auto it = answer.additional.find(r->target); it != answer.additional.end()) {
      for (const Address& ip : it->second) addresses.push_back(at_port(ip, r->port));
    } else {
      auto found = lookup(r->target, r->port);
      if (auto* why = std::get_if<std::string>(&found)) {
        failures += (failures.empty() ? "" : "; ") + *why;
        continue;
      }
      addresses = std::get<std::vector<Address>>(std::move(found));
    }
    const int weight = std::clamp<int>(r->weight, 1, kMaxWeight);
    for (Address& a : addresses) {
      const bool seen = std::any_of(out.begin(), out.end(),
                                    [&](const Endpoint& e) { return e.address.same_endpoint(a); });
      if (!seen) out.push_back({std::move(a), weight, r->priority != primary, r->target});
    }
  }
  if (skipped != nullptr) *skipped = failures;
  if (out.empty()) return "no target resolves: " + failures;
  return out;
}

Parsed<std::vector<Endpoint>> resolve_service(const std::string& service, std::string* skipped) {
  // Zeroed first: res_ninit keeps some fields a caller has set (the retransmission settings).
  auto state = std::make_unique<struct __res_state>();
  std::memset(state.get(), 0, sizeof *state);
  if (res_ninit(state.get()) != 0) {
    res_nclose(state.get());  // what it allocated before failing
    return "\"" + service + "\": cannot set up the DNS resolver (res_ninit failed)";
  }
  // The largest message there is: a large answer comes over TCP (glibc retries on truncation).
  std::vector<unsigned char> answer(65'535);
  const int n = res_nquery(state.get(), service.c_str(), ns_c_in, ns_t_srv, answer.data(),
                           static_cast<int>(answer.size()));
  const int herr = state->res_h_errno;
  res_nclose(state.get());
  if (n < 0) {
    const char* why = herr == HOST_NOT_FOUND ? "not found (NXDOMAIN)"
                      : herr == NO_DATA      ? "no SRV records"
                      : herr == TRY_AGAIN ? "no answer from the DNS server (timed out or SERVFAIL)"
                                          : "the DNS query failed";
    return "service \"" + service + "\": " + why;
  }
  auto parsed = parse_srv_answer(
      std::span<const unsigned char>(answer.data(), std::min<std::size_t>(n, answer.size())));
  if (auto* why = std::get_if<std::string>(&parsed)) return "service \"" + service + "\": " + *why;
  auto endpoints = endpoints_of(std::get<SrvAnswer>(parsed), lookup_by_name, skipped);
  if (auto* why = std::get_if<std::string>(&endpoints)) {
    return "service \"" + service + "\": " + *why;
  }
  return endpoints;
}

bool is_service_name(std::string_view text) {
  // Two underscore labels and a domain: "_pg._tcp.db" at the least.
  if (text.size() < 4 || text.front() != '_') return false;
  const auto dot = text.find('.');
  if (dot == std::string_view::npos || dot < 2 || dot + 2 >= text.size()) return false;
  if (text[dot + 1] != '_') return false;
  const auto second = text.find('.', dot + 1);
  if (second == std::string_view::npos || second == dot + 2 || second + 1 >= text.size()) {
    return false;
  }
  return std::all_of(text.begin(), text.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '-' || c == '_';
  });
}

}  // namespace ferry::conf
