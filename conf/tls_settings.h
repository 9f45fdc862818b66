// TLS settings of a proxy (termination: `tls` in a proxy) and of an upstream (origination: `tls`
// in an upstream), as read and checked at load; the worker builds its OpenSSL contexts from them.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::conf {

// The only versions allowed: TLS 1.0, 1.1 and SSLv3 are refused at load.
enum class TlsVersion { tls1_2, tls1_3 };
enum class VerifyClient { off, optional, on };

// Forward-secret AEAD suites only (Mozilla's "intermediate" list, as nginx and HAProxy ship it).
inline constexpr std::string_view kDefaultTlsCiphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
// OpenSSL's own default for TLS 1.3.
inline constexpr std::string_view kDefaultTlsCiphersuites =
    "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256";

// A PEM certificate chain file (leaf first) and its private key's file.
struct CertificatePair {
  std::string certificate;
  std::string key;

  bool operator==(const CertificatePair&) const = default;
};

// What both directions share: the versions (sorted, each once), the suites, and kernel TLS.
struct TlsProtocols {
  std::vector<TlsVersion> protocols{TlsVersion::tls1_2, TlsVersion::tls1_3};
  std::string ciphers{kDefaultTlsCiphers};            // TLS 1.2
  std::string ciphersuites{kDefaultTlsCiphersuites};  // TLS 1.3
  // `kernel_tls`: let OpenSSL hand the record layer to the kernel (SSL_OP_ENABLE_KTLS) when the
  // kernel offers kTLS. Off by default: untested on a kTLS kernel, and the relay keeps reading
  // and writing through SSL_read/SSL_write (no splice) either way.
  bool kernel_tls = false;

  bool operator==(const TlsProtocols&) const = default;
};

struct ServerTls {
  // At least one; the names each serves come from the certificate itself (its DNS
  // subjectAltNames, or its CN without any); the first is the default.
  std::vector<CertificatePair> certificates;
  TlsProtocols versions;
  // Server preference order; empty: ALPN is not negotiated.
  std::vector<std::string> alpn;
  std::string client_ca;  // "" = none
  VerifyClient verify_client = VerifyClient::off;
  std::chrono::milliseconds handshake_timeout{10'000};
  bool session_tickets = true;
  // Ticket keys rotate every period this long; a ticket is accepted for two periods.
  std::chrono::milliseconds session_ticket_lifetime{3'600'000};

  bool operator==(const ServerTls&) const = default;
};

struct ClientTls {
  bool verify = true;
  std::string ca;                      // "" = OpenSSL's default verify paths (the system store)
  std::string server_name;             // "" = each server's host name (none for a literal address)
  CertificatePair client_certificate;  // both empty = no client certificate
  TlsProtocols versions;
  // Offer each server the session it last gave this worker (an abbreviated handshake), as
  // nginx's proxy_ssl_session_reuse and HAProxy do by default.
  bool session_reuse = true;

  bool operator==(const ClientTls&) const = default;
};

}  // namespace ferry::conf
