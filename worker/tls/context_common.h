// What the server and the client contexts set alike: versions, suites, the options every TLS
// connection of ferry has, and kernel TLS when asked for and the kernel offers it.
#pragma once

#include <openssl/ssl.h>

#include <string>

#include "conf/tls_settings.h"

namespace ferry::worker::tls {

// Versions, TLS 1.2 ciphers and TLS 1.3 suites of `v`; no renegotiation, no compression,
// buffers released while idle, SSL_OP_ENABLE_KTLS when `v.kernel_tls` asks for it and
// kernel_tls_usable(). False with `error`
// (OpenSSL's reason) when one is refused.
bool set_common(SSL_CTX* ctx, const conf::TlsProtocols& v, std::string& error);

}  // namespace ferry::worker::tls
