// Building a configuration's TLS contexts, and finding a proxy's or an upstream's.
#include "worker/tls/tls_contexts.h"

namespace ferry::worker::tls {

std::shared_ptr<const TlsContexts> TlsContexts::build(const conf::Config& cfg,
                                                      std::shared_ptr<const TicketKeys> keys,
                                                      std::string& error) {
  auto out = std::make_shared<TlsContexts>();
  for (const conf::Proxy& p : cfg.proxies) {
    if (!p.tls) continue;
    std::string why;
    auto ctx = ServerContext::create(*p.tls, keys, why);
    if (!ctx) {
      error = "proxy \"" + p.name + "\": tls: " + why;
      return nullptr;
    }
    out->servers_.emplace(p.name, std::move(ctx));
  }
  for (const conf::Upstream& u : cfg.upstreams) {
    if (!u.tls) continue;
    std::string why;
    auto ctx = ClientContext::create(*u.tls, why);
    if (!ctx) {
      error = "upstream \"" + u.name + "\": tls: " + why;
      return nullptr;
    }
    out->clients_.emplace(u.name, std::move(ctx));
  }
  return out;
}

const ServerContext* TlsContexts::server(std::string_view proxy) const noexcept {
  const auto it = servers_.find(proxy);
  return it != servers_.end() ? it->second.get() : nullptr;
}

const ClientContext* TlsContexts::client(std::string_view upstream) const noexcept {
  const auto it = clients_.find(upstream);
  return it != clients_.end() ? it->second.get() : nullptr;
}

}  // namespace ferry::worker::tls
