// TLS termination: the OpenSSL contexts of a proxy's `tls`, one per group of certificates that
// serve the same names, the client's SNI choosing among them during the ClientHello.
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "conf/openssl_ptr.h"
#include "conf/tls_settings.h"
#include "worker/tls/ticket_keys.h"

namespace ferry::worker::tls {

using conf::SslCtxPtr;
using conf::SslPtr;

class ServerContext {
 public:
  // Builds the SSL_CTX(s) for a proxy's `tls`; null with `error` (naming the file and OpenSSL's
  // reason) when it cannot. Reads the certificates and keys: done where they are readable.
  // `keys`: the master's ticket keys, shared by its workers; null: OpenSSL's own per-process
  // keys (a ticket then resumes only in the worker that issued it).
  static std::unique_ptr<ServerContext> create(const conf::ServerTls& settings,
                                               std::shared_ptr<const TicketKeys> keys,
                                               std::string& error);

  // A new server-side SSL for an accepted connection `fd` (SSL_set_fd, accept state); null when
  // out of memory, OpenSSL's reason left queued (tls::take_error). The caller frees it.
  SSL* new_ssl(int fd) const;

  // After the handshake: the client certificate's subject (one line, RFC 2253) or "".
  static std::string client_subject(SSL* ssl);
  // The negotiated version's name ("TLSv1.3").
  static std::string_view version(SSL* ssl);
  // The SNI the client sent, or "".
  static std::string_view server_name(SSL* ssl);

  // The context serving `name` (any case): an exact name, else a "*.suffix" wildcard one label
  // deep, else the default (the first certificate's). Allocation-free.
  [[nodiscard]] SSL_CTX* context_for(std::string_view name) const;
  // Whether SSL_OP_ENABLE_KTLS is set (kernel_tls = true, and the kernel offers kTLS).
  [[nodiscard]] bool kernel_tls() const noexcept { return ktls_; }

 private:
  ServerContext() = default;
  bool add_certificates(const conf::ServerTls& settings, std::string& error);
  bool configure(SSL_CTX* ctx, const conf::ServerTls& settings,
                 const std::shared_ptr<const TicketKeys>& keys, std::string& error);
  static int on_client_hello(SSL* ssl, int* alert, void* arg);
  static int on_alpn(SSL* ssl, const unsigned char** out, unsigned char* outlen,
                     const unsigned char* in, unsigned int inlen, void* arg);
  [[nodiscard]] SSL_CTX* find(std::string_view lowercase) const;

  std::vector<SslCtxPtr> contexts_;  // [0]: the default
  // Lowercase names ("a.test", "*.b.test") → index in contexts_, sorted by name; the first
  // certificate naming one keeps it.
  std::vector<std::pair<std::string, std::size_t>> names_;
  std::string alpn_;  // the server's protocols in wire format (length-prefixed), its order
  bool ktls_ = false;
};

}  // namespace ferry::worker::tls
