// TlsContexts: the OpenSSL contexts of one configuration — a ServerContext per proxy that
// terminates TLS, a ClientContext per upstream that originates it. The master builds them when
// it loads the configuration (as root: keys may be readable by root alone) and its workers
// inherit them with the fork; a reload builds new ones, the old generation keeps its own.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "conf/config.h"
#include "worker/tls/client_context.h"
#include "worker/tls/server_context.h"
#include "worker/tls/ticket_keys.h"

namespace ferry::worker::tls {

class TlsContexts {
 public:
  // Every proxy's and upstream's `tls` of `cfg`; null with `error` naming which and why.
  // `keys`: the master's ticket keys (shared by every generation of its workers).
  static std::shared_ptr<const TlsContexts> build(const conf::Config& cfg,
                                                  std::shared_ptr<const TicketKeys> keys,
                                                  std::string& error);

  // The proxy's (by name), or null when it does not terminate TLS.
  [[nodiscard]] const ServerContext* server(std::string_view proxy) const noexcept;
  // The upstream's (by name), or null when it does not originate TLS.
  [[nodiscard]] const ClientContext* client(std::string_view upstream) const noexcept;
  [[nodiscard]] bool empty() const noexcept { return servers_.empty() && clients_.empty(); }

 private:
  std::map<std::string, std::unique_ptr<ServerContext>, std::less<>> servers_;
  std::map<std::string, std::unique_ptr<ClientContext>, std::less<>> clients_;
};

}  // namespace ferry::worker::tls
