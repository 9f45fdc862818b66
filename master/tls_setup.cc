// The master's part of TLS: the session ticket keys, made once (or from the secret an old master
// passed) and shared by every worker it forks, and each configuration's contexts, built where
// the keys and certificates are readable.
#include <string>

#include <spdlog/spdlog.h>

#include "master/master.h"
#include "worker/tls/ktls.h"

namespace ferry::master {

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
      spdlog::info("kernel TLS (kTLS) is available: OpenSSL hands the record layer to it");
    } else {
      spdlog::info("kernel TLS (kTLS) is not available ({}): TLS is relayed in user space",
                   no_ktls);
    }
  }
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
