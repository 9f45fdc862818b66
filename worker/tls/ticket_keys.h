// Session ticket keys shared by every worker of a master without IPC: a random secret made once
// in the master before the workers are forked, and each time period's key derived from it.
#pragma once

#include <openssl/ssl.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>

namespace ferry::worker::tls {

// One period's key, as RFC 5077's recommended ticket format uses it.
struct TicketKey {
  std::array<unsigned char, 16> name{};
  std::array<unsigned char, 32> aes{};   // AES-256-CBC
  std::array<unsigned char, 32> hmac{};  // HMAC-SHA256
};

class TicketKeys {
 public:
  static constexpr std::size_t kSecretSize = 32;

  // A new random secret (RAND_bytes); null when OpenSSL's generator fails.
  static std::shared_ptr<TicketKeys> create();
  // From a given secret: a test's, or one the master kept across a binary upgrade.
  static std::shared_ptr<TicketKeys> from_secret(
      std::span<const unsigned char, kSecretSize> secret);

  // The number of the period of length `lifetime` that now is, on the realtime clock, so that
  // workers forked at different times (or by the new binary of an upgrade) agree.
  [[nodiscard]] std::int64_t period(std::chrono::milliseconds lifetime) const;
  // Period `n`'s key: HKDF-SHA256(secret, info = "ferry ticket key" + n); false when OpenSSL
  // fails.
  bool key(std::int64_t n, TicketKey& out) const;

  // Test hook: the realtime clock reads `t` from now on.
  void set_now_for_test(std::chrono::system_clock::time_point t);

  explicit TicketKeys(std::span<const unsigned char, kSecretSize> secret);
  ~TicketKeys();  // wipes the secret and the keys
  TicketKeys(const TicketKeys&) = delete;
  TicketKeys& operator=(const TicketKeys&) = delete;

 private:
  std::array<unsigned char, kSecretSize> secret_{};
  std::atomic<std::int64_t> fixed_now_ms_{0};  // 0: the real clock
  // The last two periods' keys, derived once (every ticket issued or read wants one).
  struct Cached {
    std::int64_t period = -1;
    TicketKey key;
  };
  mutable std::mutex mutex_;
  mutable std::array<Cached, 2> cache_{};
};

// Makes `ctx` encrypt tickets with the current period's key of `keys` and accept the current
// and the previous period's (the latter renewed). False with `error` when OpenSSL fails.
bool use_ticket_keys(SSL_CTX* ctx, std::shared_ptr<const TicketKeys> keys,
                     std::chrono::milliseconds lifetime, std::string& error);

}  // namespace ferry::worker::tls
