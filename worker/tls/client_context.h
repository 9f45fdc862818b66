// TLS origination: the OpenSSL context of an upstream's `tls`, and a client SSL per connection
// to a server with the name to send as SNI and to verify (or the address, for a literal one),
// offering the session the server last gave (session_reuse).
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <string_view>

#include "conf/tls_settings.h"
#include "worker/tls/server_context.h"

namespace ferry::worker::tls {

class ClientContext {
 public:
  // Null with `error` (naming the file and OpenSSL's reason) when the context cannot be built.
  static std::unique_ptr<ClientContext> create(const conf::ClientTls& settings, std::string& error);

  // A client-side SSL on connected socket `fd` for a server whose name (when written as a name)
  // is `host` and address `ip_text`, in connect state. The name verified and sent as SNI is
  // `server_name` when set, else `host`; without a name (or with a literal address for one) no
  // SNI is sent and the address is verified as an IP subjectAltName. Null when OpenSSL fails,
  // its reason left queued (tls::take_error). The caller frees it.
  // With session_reuse, `cache` is the server's slot in this worker: its session is offered,
  // and the sessions the server gives on this connection replace it (TLS 1.3 tickets come after
  // the handshake, so the slot must outlive the SSL). Null: none offered or kept.
  SSL* new_ssl(int fd, std::string_view host, std::string_view ip_text,
               conf::SslSessionPtr* cache = nullptr) const;

  // The handshake on `ssl` failed: its server's cached session goes (it may be what the server
  // refused), and no later one is kept from this SSL.
  static void forget_session(SSL* ssl) noexcept;

  // Why verification failed, for the log: X509_verify_cert_error_string() of the result, with
  // the name or address expected when that is what did not match.
  static std::string verify_error(SSL* ssl);

  // Whether SSL_OP_ENABLE_KTLS is set (kernel_tls = true, and the kernel offers kTLS).
  [[nodiscard]] bool kernel_tls() const noexcept { return ktls_; }

 private:
  ClientContext() = default;
  SslCtxPtr ctx_;
  std::string server_name_;
  bool verify_ = true;
  bool ktls_ = false;
  bool session_reuse_ = true;
};

}  // namespace ferry::worker::tls
