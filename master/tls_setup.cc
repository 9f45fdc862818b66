// The master's part of TLS: the session ticket keys, made once (or from the secret an old master
// passed) and shared by every worker it forks, and each configuration's contexts, built where
// the keys and certificates are readable.
#include <algorithm>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

#include "master/master.h"
#include "worker/tls/ktls.h"

namespace ferry::master {
namespace {

// kernel_tls = true where the kernel offers no kTLS: said for each proxy and upstream asking for
// it, at every load (start, reload); their TLS is relayed in user space, as without the setting.
void warn_unavailable_kernel_tls(const conf::Config& cfg) {
  if (worker::tls::kernel_tls_usable()) return;
  std::string why;
  const auto warn = [&](std::string_view kind, const std::string& name) {
    if (why.empty() && worker::tls::kernel_tls_available(why)) why = "it came up since the start";
    spdlog::warn(
        "{} \"{}\": kernel_tls = true, but kernel TLS is not available ({}): its TLS is "
        "relayed in user space",
        kind, name, why);
  };
  for (const conf::Proxy& p : cfg.proxies) {
    if (p.tls && p.tls->versions.kernel_tls) warn("proxy", p.name);
  }
  for (const conf::Upstream& u : cfg.upstreams) {
    if (u.tls && u.tls->versions.kernel_tls) warn("upstream", u.name);
  }
}

}  // namespace

bool Master::build_tls(const conf::Config& cfg,
                       std::shared_ptr<const worker::tls::TlsContexts>& out, std::string* why) {
  out = nullptr;
  const bool any = std::any_of(cfg.proxies.begin(), cfg.proxies.end(),
                               [](const conf::Proxy& p) { return p.tls.has_value(); }) ||
                   std::any_of(cfg.upstreams.begin(), cfg.upstreams.end(),
                               [](const conf::Upstream& u) { return u.tls.has_value(); });
  if (!any) return true;
  if (!ticket_keys_) {
    // The old master's secret after a binary upgrade, so that its tickets resume here.
    ticket_keys_ = ticket_secret_.make_keys();
    if (!ticket_keys_) {
      spdlog::warn("no random secret for TLS session tickets: each worker keeps its own keys");
    }
    // Said once, when TLS is first configured: whether relaying can leave records to the kernel.
    std::string no_ktls;
    if (worker::tls::kernel_tls_available(no_ktls)) {
      spdlog::info(
          "kernel TLS (kTLS) is available: OpenSSL hands the record layer to it where "
          "kernel_tls = true");
    } else {
      spdlog::info("kernel TLS (kTLS) is not available ({}): TLS is relayed in user space",
                   no_ktls);
    }
  }
  warn_unavailable_kernel_tls(cfg);
  std::string error;
  out = worker::tls::TlsContexts::build(cfg, ticket_keys_, error);
  if (out) return true;
  if (why != nullptr) {
    *why = error;
  } else {
    spdlog::critical("{}", error);
  }
  return false;
}

}  // namespace ferry::master
