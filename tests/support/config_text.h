// Test configurations built from parts — proxies, upstreams, servers, top-level lines — so that
// no test file writes libconfig text by string concatenation of its own.
#pragma once

#include <string>
#include <vector>

namespace ferry::test {

// "127.0.0.1:PORT".
std::string loopback(int port);

struct ServerSpec {
  std::string address;  // "host:port" (loopback(port) for the usual one)
  std::string extra;    // more settings of the server: "weight = 2; ..."
};

struct UpstreamSpec {
  std::string name = "app";
  std::vector<ServerSpec> servers;
  std::string extra;  // more settings of the upstream: "balance = \"hash\"; ..."
};

struct ProxySpec {
  std::string name = "web";
  std::vector<std::string> listen;  // each "host:port"
  std::string upstream;             // an upstream's name, or "host:port"
  std::string extra;                // more settings of the proxy: "access_log = \"off\"; ..."
};

// A server on loopback at `port`; an upstream named `name` of `servers` (gcc's
// -Wmissing-field-initializers wants every trailing member of an aggregate written out).
ServerSpec server_at(int port, const std::string& extra = "");
UpstreamSpec upstream_of(std::vector<ServerSpec> servers, const std::string& extra = "",
                         const std::string& name = "app");

// The file: `top` (settings before the lists, each line ending in ";"), the upstreams, then
// the proxies.
std::string config_text(const std::string& top, const std::vector<ProxySpec>& proxies,
                        const std::vector<UpstreamSpec>& upstreams = {});
// One proxy group / one upstream group, as they appear in the lists.
std::string proxy_text(const ProxySpec& p);
std::string upstream_text(const UpstreamSpec& u);

}  // namespace ferry::test
