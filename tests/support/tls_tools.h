// Test helpers for TLS: a real ClientHello made by OpenSSL's own client (in memory), and the
// openssl command-line tools — a self-signed certificate, an `openssl s_server`, `s_client`.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/process.h"

namespace ferry::test {

// The bytes OpenSSL's client sends first (its ClientHello records) for server name `sni` (none
// when empty) offering `alpn`; "" when OpenSSL failed.
std::string client_hello_bytes(const std::string& sni, const std::vector<std::string>& alpn = {});

struct CertFiles {
  std::string cert;
  std::string key;
};
// A self-signed ECDSA P-256 certificate for CN `cn` in `dir` (openssl req); empty paths when the
// tool failed.
CertFiles self_signed(const std::string& dir, const std::string& cn);

// `openssl s_server -www` on 127.0.0.1:`port` with `cert`, answering with ALPN `alpn` when not
// empty; started() waits until it accepts connections.
class TlsServer {
 public:
  TlsServer(int port, const CertFiles& cert, const std::vector<std::string>& alpn = {});
  bool started(std::chrono::milliseconds limit = std::chrono::seconds(10));
  [[nodiscard]] int port() const noexcept { return port_; }

 private:
  int port_;
  std::unique_ptr<Process> process_;
};

// `openssl s_client` to 127.0.0.1:`port` with SNI `sni` (none when empty) and `alpn`, plus
// `extra` arguments; its stdin is empty, so it ends after the handshake.
Finished s_client(int port, const std::string& sni, const std::vector<std::string>& alpn = {},
                  const std::vector<std::string>& extra = {});
// "CN = backend-a" style subject of the server certificate s_client printed ("" when none).
std::string peer_subject(const Finished& f);

}  // namespace ferry::test
