// The configuration builder's text: one group per line, strings quoted as libconfig wants.
#include "tests/support/config_text.h"

#include <utility>

namespace ferry::test {
namespace {

std::string quoted(const std::string& s) { return "\"" + s + "\""; }

// `items` joined into a libconfig list or array body.
std::string joined(const std::vector<std::string>& items, const char* between) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : between) + item;
  return out;
}

}  // namespace

std::string loopback(int port) { return "127.0.0.1:" + std::to_string(port); }

ServerSpec server_at(int port, const std::string& extra) { return {loopback(port), extra}; }

UpstreamSpec upstream_of(std::vector<ServerSpec> servers, const std::string& extra,
                         const std::string& name) {
  return {name, std::move(servers), extra};
}

std::string proxy_text(const ProxySpec& p) {
  std::vector<std::string> listen;
  for (const auto& l : p.listen) listen.push_back(quoted(l));
  return "{ name = " + quoted(p.name) + "; listen = [ " + joined(listen, ", ") +
         " ]; upstream = " + quoted(p.upstream) + "; " + p.extra + " }";
}

std::string upstream_text(const UpstreamSpec& u) {
  std::vector<std::string> servers;
  for (const auto& s : u.servers) {
    servers.push_back("{ address = " + quoted(s.address) + "; " + s.extra + " }");
  }
  return "{ name = " + quoted(u.name) + "; servers = ( " + joined(servers, ", ") + " ); " +
         u.extra + " }";
}

std::string config_text(const std::string& top, const std::vector<ProxySpec>& proxies,
                        const std::vector<UpstreamSpec>& upstreams) {
  std::string out = top.empty() || top.back() == '\n' ? top : top + "\n";
  if (!upstreams.empty()) {
    std::vector<std::string> groups;
    for (const auto& u : upstreams) groups.push_back("  " + upstream_text(u));
    out += "upstreams = (\n" + joined(groups, ",\n") + "\n);\n";
  }
  std::vector<std::string> groups;
  for (const auto& p : proxies) groups.push_back("  " + proxy_text(p));
  return out + "proxies = (\n" + joined(groups, ",\n") + "\n);\n";
}

}  // namespace ferry::test
