// SocketAddress: a sockaddr_storage with its length, printable as "1.2.3.4:80" or "[::1]:80".
#pragma once

#include <sys/socket.h>

#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace ferry::event {

class SocketAddress {
 public:
  SocketAddress() noexcept { std::memset(&storage_, 0, sizeof storage_); }
  SocketAddress(const sockaddr* sa, socklen_t len) noexcept;

  // Numeric forms only ("127.0.0.1:80", "[::1]:80", "*:80"); names are resolved in conf/.
  static std::optional<SocketAddress> parse_numeric(std::string_view text);

  [[nodiscard]] const sockaddr* get() const noexcept {
    return reinterpret_cast<const sockaddr*>(&storage_);
  }
  [[nodiscard]] sockaddr* get() noexcept { return reinterpret_cast<sockaddr*>(&storage_); }
  [[nodiscard]] socklen_t length() const noexcept { return length_; }
  // For accept4/getsockname: the capacity on input, the real length written back.
  [[nodiscard]] socklen_t* length_ptr() noexcept { return &length_; }
  void set_length(socklen_t len) noexcept { length_ = len; }
  [[nodiscard]] sa_family_t family() const noexcept { return storage_.ss_family; }
  [[nodiscard]] int port() const noexcept;

  [[nodiscard]] std::string to_string() const;

  friend bool operator==(const SocketAddress& a, const SocketAddress& b) noexcept {
    return a.length_ == b.length_ && std::memcmp(&a.storage_, &b.storage_, a.length_) == 0;
  }

 private:
  sockaddr_storage storage_;
  socklen_t length_ = sizeof(sockaddr_storage);
};

}  // namespace ferry::event
