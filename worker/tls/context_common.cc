// The settings both directions' contexts share (see context_common.h).
#include "worker/tls/context_common.h"

#include "conf/tls_check.h"
#include "worker/tls/ktls.h"

namespace ferry::worker::tls {

bool set_common(SSL_CTX* ctx, const conf::TlsProtocols& v, std::string& error) {
  if (SSL_CTX_set_min_proto_version(ctx, conf::min_version(v.protocols)) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, conf::max_version(v.protocols)) != 1) {
    error = "cannot set the TLS versions: " + conf::openssl_error();
    return false;
  }
  if (SSL_CTX_set_cipher_list(ctx, v.ciphers.c_str()) != 1) {
    error = "ciphers \"" + v.ciphers + "\": " + conf::openssl_error();
    return false;
  }
  if (SSL_CTX_set_ciphersuites(ctx, v.ciphersuites.c_str()) != 1) {
    error = "ciphersuites \"" + v.ciphersuites + "\": " + conf::openssl_error();
    return false;
  }
  // Renegotiation is a denial-of-service lever and no layer-4 peer needs it.
  std::uint64_t options = SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION;
  // Kernel TLS only when asked for (kernel_tls = true) and the kernel offers it.
  const bool ktls = v.kernel_tls && kernel_tls_usable();
  if (ktls) options |= SSL_OP_ENABLE_KTLS;
  SSL_CTX_set_options(ctx, options);
  // An idle relay holds no 34 KB of OpenSSL buffers.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  // One read(2) takes what the socket holds (whole records, several of them) instead of a
  // record's header and then its body: half the reads in bulk. The relay keeps reading after a
  // read that got bytes, so records OpenSSL holds are never left waiting for an edge.
  // Not with kernel TLS: records read ahead of the key change would be user space's, not the
  // kernel's, and OpenSSL leaves kTLS reception off when it reads ahead.
  SSL_CTX_set_read_ahead(ctx, ktls ? 0 : 1);
  return true;
}

}  // namespace ferry::worker::tls
