// Whether kernel TLS can be used: the kernel's "tls" upper-layer protocol for TCP. With it,
// OpenSSL (SSL_OP_ENABLE_KTLS) hands the record layer to the kernel after the handshake.
#pragma once

#include <string>
#include <string_view>

namespace ferry::worker::tls {

// True when the kernel offers the "tls" ULP: listed in /proc/sys/net/ipv4/tcp_available_ulp
// and accepted by setsockopt(TCP_ULP) on a connected loopback socket. Else `why` says why not.
// Probes each time it is called (two sockets); kernel_tls_usable() keeps the first answer.
bool kernel_tls_available(std::string& why);
// kernel_tls_available()'s first answer in this process.
bool kernel_tls_usable();

// Whether the space-separated list of tcp_available_ulp names "tls".
bool ulp_list_has_tls(std::string_view list);

}  // namespace ferry::worker::tls
