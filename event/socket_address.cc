// SocketAddress parsing and printing.
#include "event/socket_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <charconv>

namespace ferry::event {

SocketAddress::SocketAddress(const sockaddr* sa, socklen_t len) noexcept : SocketAddress() {
  if (len > sizeof storage_) len = sizeof storage_;
  std::memcpy(&storage_, sa, len);
  length_ = len;
}

std::optional<SocketAddress> SocketAddress::parse_numeric(std::string_view text) {
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  std::string host(text.substr(0, colon));
  const std::string_view port_text = text.substr(colon + 1);
  unsigned port = 0;
  const auto [end, ec] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc{} || end != port_text.data() + port_text.size() || port > 65535 ||
      port_text.empty()) {
    return std::nullopt;
  }

  SocketAddress out;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &sin6.sin6_addr) != 1) {
      return std::nullopt;
    }
    return SocketAddress(reinterpret_cast<const sockaddr*>(&sin6), sizeof sin6);
  }
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(static_cast<uint16_t>(port));
  if (host == "*") {
    sin.sin_addr.s_addr = htonl(INADDR_ANY);
  } else if (inet_pton(AF_INET, host.c_str(), &sin.sin_addr) != 1) {
    return std::nullopt;
  }
  return SocketAddress(reinterpret_cast<const sockaddr*>(&sin), sizeof sin);
}

int SocketAddress::port() const noexcept {
  switch (storage_.ss_family) {
    case AF_INET: return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
    case AF_INET6: return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
    default: return 0;
  }
}

std::string SocketAddress::to_string() const {
  char text[INET6_ADDRSTRLEN] = {};
  switch (storage_.ss_family) {
    case AF_INET: {
      const auto* sin = reinterpret_cast<const sockaddr_in*>(&storage_);
      inet_ntop(AF_INET, &sin->sin_addr, text, sizeof text);
      return std::string(text) + ':' + std::to_string(ntohs(sin->sin_port));
    }
    case AF_INET6: {
      const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&storage_);
      inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof text);
      return '[' + std::string(text) + "]:" + std::to_string(ntohs(sin6->sin6_port));
    }
    case AF_UNIX: return "unix:";
    default: return "-";
  }
}

}  // namespace ferry::event
