// open_listeners(): conf::Address → event::Listening, opened in configuration order.
#include "master/listeners.h"

#include <spdlog/spdlog.h>

namespace ferry::master {

std::error_code open_listeners(const conf::Config& cfg,
                               std::vector<std::unique_ptr<event::Listening>>& out) {
  std::vector<std::unique_ptr<event::Listening>> opened;
  for (const conf::Proxy& proxy : cfg.proxies) {
    for (const conf::Address& address : proxy.listen) {
      auto ls = std::make_unique<event::Listening>();
      ls->address = event::SocketAddress(address.sockaddr_ptr(), address.length);
      ls->backlog = proxy.backlog;
      ls->reuseport = proxy.reuseport;
      ls->data = const_cast<conf::Proxy*>(&proxy);
      if (auto ec = event::open_listening(*ls)) {
        spdlog::critical("proxy \"{}\": cannot listen on {}: {}", proxy.name, address.text,
                         ec.message());
        return ec;
      }
      spdlog::info("proxy \"{}\" listening on {}", proxy.name, ls->address.to_string());
      opened.push_back(std::move(ls));
    }
  }
  out = std::move(opened);
  return {};
}

}  // namespace ferry::master
