// Address: a listen or server address as the configuration gives it, resolved to a sockaddr
// once, in conf/, so no other module parses text from the file.
#pragma once

#include <sys/socket.h>

#include <cstring>
#include <string>

namespace ferry::conf {

struct Address {
  std::string text;  // as written: "127.0.0.1:80", "[::1]:80", "*:80", "name:80"
  sockaddr_storage storage{};
  socklen_t length = 0;

  [[nodiscard]] const sockaddr* sockaddr_ptr() const noexcept {
    return reinterpret_cast<const sockaddr*>(&storage);
  }
  // Same socket address (the text may differ: "*:80" and "0.0.0.0:80" are equal).
  [[nodiscard]] bool same_endpoint(const Address& other) const noexcept {
    return length == other.length && std::memcmp(&storage, &other.storage, length) == 0;
  }
  bool operator==(const Address& other) const noexcept {
    return text == other.text && same_endpoint(other);
  }
};

}  // namespace ferry::conf
