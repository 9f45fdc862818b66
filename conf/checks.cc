// Checks across settings: duplicate names, colliding listen addresses.
#include "conf/checks.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <map>
#include <string>
#include <vector>

namespace ferry::conf {
namespace {

// Two listen addresses collide when equal, or when one is the wildcard of the other's family
// on the same port (Linux refuses the second bind).
bool collide(const Address& a, const Address& b) {
  if (a.same_endpoint(b)) return true;
  if (a.storage.ss_family != b.storage.ss_family) return false;
  if (a.storage.ss_family == AF_INET) {
    const auto* x = reinterpret_cast<const sockaddr_in*>(&a.storage);
    const auto* y = reinterpret_cast<const sockaddr_in*>(&b.storage);
    return x->sin_port == y->sin_port &&
           (x->sin_addr.s_addr == htonl(INADDR_ANY) || y->sin_addr.s_addr == htonl(INADDR_ANY));
  }
  if (a.storage.ss_family == AF_INET6) {
    const auto* x = reinterpret_cast<const sockaddr_in6*>(&a.storage);
    const auto* y = reinterpret_cast<const sockaddr_in6*>(&b.storage);
    return x->sin6_port == y->sin6_port &&
           (IN6_IS_ADDR_UNSPECIFIED(&x->sin6_addr) || IN6_IS_ADDR_UNSPECIFIED(&y->sin6_addr));
  }
  return false;
}

}  // namespace

void check_unique_names(Reader& r, const Setting& list, const char* what) {
  std::map<std::string, const Setting*> seen;
  for (const Setting& e : list) {
    if (e.getType() != Setting::TypeGroup || !e.exists("name")) continue;
    const Setting& name = e["name"];
    if (name.getType() != Setting::TypeString) continue;
    auto [it, fresh] = seen.emplace(name.c_str(), &name);
    if (!fresh) {
      r.error(name, std::string("duplicate ") + what + " name \"" + name.c_str() + "\" (first at " +
                        r.where(*it->second) + ")");
    }
  }
}

void check_listen_addresses(Reader& r, const Setting& root, const Config& cfg) {
  struct Seen {
    Address address;
    const Setting* setting;
  };
  std::vector<Seen> seen;
  auto visit = [&](const Setting& s) {
    auto parsed = parse_address(s.c_str());
    auto* a = std::get_if<Address>(&parsed);
    if (a == nullptr) return;  // already reported
    for (const Seen& other : seen) {
      if (collide(*a, other.address)) {
        r.error(s, "\"" + a->text + "\" is already listened on as \"" + other.address.text +
                       "\" (" + r.where(*other.setting) + ")");
        return;
      }
    }
    seen.push_back({std::move(*a), &s});
  };
  if (root.exists("proxies") && root["proxies"].getType() == Setting::TypeList) {
    for (const Setting& p : root["proxies"]) {
      if (p.getType() != Setting::TypeGroup || !p.exists("listen")) continue;
      const Setting& l = p["listen"];
      if (l.getType() == Setting::TypeString) {
        visit(l);
      } else if (l.getType() == Setting::TypeArray || l.getType() == Setting::TypeList) {
        for (const Setting& e : l) {
          if (e.getType() == Setting::TypeString) visit(e);
        }
      }
    }
  }
  if (!cfg.status || cfg.status->listen.text.empty()) return;
  // Checked as read: the default or a bare port is not an address in the file.
  const Setting& where =
      root["status"].exists("listen") ? root["status"]["listen"] : root["status"];
  for (const Seen& other : seen) {
    if (collide(cfg.status->listen, other.address)) {
      r.error(where, "\"" + cfg.status->listen.text + "\" is already listened on as \"" +
                         other.address.text + "\" (" + r.where(*other.setting) + ")");
      return;
    }
  }
}

}  // namespace ferry::conf
