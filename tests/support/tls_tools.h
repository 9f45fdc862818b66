// Test helpers for TLS: a real ClientHello made by OpenSSL's own client (in memory), and the
// openssl command-line tools — a self-signed certificate, an `openssl s_server`, `s_client`.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <openssl/ssl.h>

#include "tests/support/process.h"
#include "tests/support/test_ca.h"

namespace ferry::test {

// The bytes OpenSSL's client sends first (its ClientHello records) for server name `sni` (none
// when empty) offering `alpn`; "" when OpenSSL failed.
std::string client_hello_bytes(const std::string& sni, const std::vector<std::string>& alpn = {});

struct CertFiles {
  std::string cert;
  std::string key;
};
// A proxy "tls" on `port` terminating with `certs` (the first the default) and `tls_extra`,
// relaying to 127.0.0.1:`backend`, its access log at `log`.
std::string terminating_config(int port, int backend, const std::vector<Issued>& certs,
                               const std::string& log, const std::string& tls_extra = "",
                               int workers = 1);

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

// An in-process TLS client (OpenSSL, blocking socket with 5 s timeouts) for tests that talk
// through a terminating proxy: handshake, then whole writes and exact reads.
struct TlsClientOptions {
  std::string sni;                // "" = none
  std::vector<std::string> alpn;  // offered
  std::string ca;                 // verify the server against it ("" = no verification)
  std::string verify_name;        // the name to verify ("" = sni)
  std::string cert, key;          // a client certificate
  int max_version = 0;            // TLS1_2_VERSION to stop at 1.2 (0 = the highest)
  std::string sigalgs;            // "" = OpenSSL's default list
  SSL_SESSION* resume = nullptr;  // a session to resume (not owned)
};

// Options set by `set` (designated initializers would have to name every member for gcc).
template <typename Set>
TlsClientOptions options(Set&& set) {
  TlsClientOptions o;
  set(o);
  return o;
}

class TlsClient {
 public:
  // Connects to 127.0.0.1:`port` and runs the handshake (connected() says how it went).
  TlsClient(int port, const TlsClientOptions& options);
  ~TlsClient();
  TlsClient(const TlsClient&) = delete;
  TlsClient& operator=(const TlsClient&) = delete;

  // The handshake completed (and verified, with a CA).
  [[nodiscard]] bool connected() const noexcept { return connected_; }
  [[nodiscard]] const std::string& error() const noexcept { return error_; }
  bool write(const std::string& data);
  std::string read(std::size_t n);  // exactly n bytes, or fewer at an error/EOF/timeout
  bool round_trip(const std::string& data) { return write(data) && read(data.size()) == data; }
  // The server certificate's subject ("CN=a.test"), the version ("TLSv1.3"), the ALPN agreed,
  // whether the session was resumed, and the key type of the server's certificate.
  [[nodiscard]] std::string peer_subject() const;
  [[nodiscard]] std::string version() const;
  [[nodiscard]] std::string alpn() const;
  [[nodiscard]] bool resumed() const;
  [[nodiscard]] std::string peer_key_type() const;  // "EC" or "RSA"
  // A session to resume with, owned by the caller (SSL_SESSION_free); reads the tickets a TLS
  // 1.3 server sends after the handshake first.
  SSL_SESSION* take_session();
  // TLS 1.2: asks for a renegotiation; true when the server went along with it.
  bool renegotiate();
  // Whether the server closed (EOF or an alert) within `limit`.
  bool closed_by_server(std::chrono::milliseconds limit = std::chrono::seconds(5));
  // Sends a TCP FIN after close_notify.
  void shutdown_write();
  // Reads until the server's end: true when it ended with a close_notify (a TCP FIN alone is a
  // truncation to OpenSSL); bytes read on the way are dropped.
  bool ends_with_close_notify();

 private:
  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  bool connected_ = false;
  std::string error_;
};

// A TLS echo server on 127.0.0.1 (a thread per connection, OpenSSL in the test): what a server
// that requires TLS looks like to ferry's origination. With `client_ca`, it requires a client
// certificate signed by it; with `proxy_header`, it reads a PROXY v1 line in clear first.
// Counts the handshakes that completed, and those of them that resumed a session.
class TlsEchoServer {
 public:
  TlsEchoServer(const std::string& cert, const std::string& key, const std::string& client_ca = "",
                bool proxy_header = false);
  ~TlsEchoServer();
  TlsEchoServer(const TlsEchoServer&) = delete;
  TlsEchoServer& operator=(const TlsEchoServer&) = delete;
  [[nodiscard]] int port() const noexcept { return port_; }
  [[nodiscard]] int handshakes() const noexcept { return handshakes_.load(); }
  [[nodiscard]] int resumed() const noexcept { return resumed_.load(); }
  // New ticket keys and no lookups in the session cache: no session given so far resumes. Call
  // it between connections. False when OpenSSL failed.
  bool forget_sessions();
  // The SNI the last client sent ("" when none).
  [[nodiscard]] std::string last_sni() const;
  // The PROXY line the last client sent before its handshake (with proxy_header).
  [[nodiscard]] std::string last_header() const;

 private:
  void serve();
  void echo(int fd);
  int fd_ = -1;
  int port_ = 0;
  SSL_CTX* ctx_ = nullptr;
  std::atomic<bool> stop_{false};
  std::atomic<int> handshakes_{0};
  std::atomic<int> resumed_{0};
  mutable std::mutex mutex_;
  std::string last_sni_;
  std::string last_header_;
  bool proxy_header_ = false;
  std::vector<std::thread> threads_;
  std::thread acceptor_;
};

// `openssl s_client` to 127.0.0.1:`port` with SNI `sni` (none when empty) and `alpn`, plus
// `extra` arguments; its stdin is empty, so it ends after the handshake.
Finished s_client(int port, const std::string& sni, const std::vector<std::string>& alpn = {},
                  const std::vector<std::string>& extra = {});
// "CN = backend-a" style subject of the server certificate s_client printed ("" when none).
std::string peer_subject(const Finished& f);

}  // namespace ferry::test
