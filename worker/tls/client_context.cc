// TLS origination: verification against the CA file or the system store, the expected name or
// address set per connection, and an optional client certificate.
#include "worker/tls/client_context.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "conf/tls_check.h"
#include "worker/tls/context_common.h"
#include "worker/tls/ktls.h"

namespace ferry::worker::tls {
namespace {

// The ex_data slot of a client SSL holding its server's session cache slot (SslSessionPtr*).
int cache_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// A session the server gave (at the end of a TLS 1.2 handshake, or a TLS 1.3 ticket at any time
// after it): it replaces the one kept for the server. Returns 1: the reference is ours now.
int keep_session(SSL* ssl, SSL_SESSION* session) {
  auto* cache = static_cast<conf::SslSessionPtr*>(SSL_get_ex_data(ssl, cache_index()));
  if (cache == nullptr) return 0;  // OpenSSL frees it
  cache->reset(session);
  return 1;
}

bool is_ip_literal(const std::string& text) {
  unsigned char buf[sizeof(in6_addr)];
  return ::inet_pton(AF_INET, text.c_str(), buf) == 1 ||
         ::inet_pton(AF_INET6, text.c_str(), buf) == 1;
}

}  // namespace

std::unique_ptr<ClientContext> ClientContext::create(const conf::ClientTls& settings,
                                                     std::string& error) {
  std::unique_ptr<ClientContext> cc(new ClientContext());
  cc->server_name_ = settings.server_name;
  cc->verify_ = settings.verify;
  cc->ktls_ = settings.versions.kernel_tls && kernel_tls_usable();
  cc->session_reuse_ = settings.session_reuse;
  if (settings.session_reuse && cache_index() < 0) {
    error = "cannot make an OpenSSL ex_data index: " + conf::openssl_error();
    return nullptr;
  }
  ERR_clear_error();
  cc->ctx_.reset(SSL_CTX_new(TLS_client_method()));
  SSL_CTX* ctx = cc->ctx_.get();
  if (ctx == nullptr) {
    error = "cannot make an OpenSSL context: " + conf::openssl_error();
    return nullptr;
  }
  if (!set_common(ctx, settings.versions, error)) return nullptr;
  if (settings.verify) {
    const bool loaded = settings.ca.empty()
                            ? SSL_CTX_set_default_verify_paths(ctx) == 1
                            : SSL_CTX_load_verify_locations(ctx, settings.ca.c_str(), nullptr) == 1;
    if (!loaded) {
      error = (settings.ca.empty() ? std::string("the system's CA store")
                                   : "ca \"" + settings.ca + "\"") +
              ": " + conf::openssl_error();
      return nullptr;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  if (settings.session_reuse) {
    // The sessions are kept per server by the caller (new_ssl's cache), not in the context's
    // store, which is keyed by session id and could not tell the servers apart.
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, keep_session);
  } else {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  }
  const conf::CertificatePair& own = settings.client_certificate;
  if (!own.certificate.empty()) {
    conf::PairError why;
    if (!conf::load_certificate_pair(ctx, own, why)) {
      error = why.text;
      return nullptr;
    }
  }
  return cc;
}

SSL* ClientContext::new_ssl(int fd, std::string_view host, std::string_view ip_text,
                            conf::SslSessionPtr* cache) const {
  SslPtr ssl(SSL_new(ctx_.get()));
  // OpenSSL's reason stays queued for the caller's log (tls::take_error).
  if (!ssl || SSL_set_fd(ssl.get(), fd) != 1) return nullptr;
  if (session_reuse_ && cache != nullptr) {
    if (SSL_set_ex_data(ssl.get(), cache_index(), cache) != 1) return nullptr;
    // A session OpenSSL will not take (a version no longer allowed, say) costs the abbreviated
    // handshake only: the full one follows and its session replaces it.
    if (*cache && SSL_set_session(ssl.get(), cache->get()) != 1) {
      ERR_clear_error();
      cache->reset();
    }
  }
  std::string name = server_name_.empty() ? std::string(host) : server_name_;
  std::string ip(ip_text);
  if (!name.empty() && is_ip_literal(name)) {
    // An address written where a name goes: verified as one, and never sent as SNI (RFC 6066).
    ip = std::move(name);
    name.clear();
  }
  bool ok = true;
  if (!name.empty()) {
    ok = SSL_set_tlsext_host_name(ssl.get(), name.c_str()) == 1;
    if (ok && verify_) {
      // Wildcards match one whole label only ("*.a.test", not "f*.a.test").
      SSL_set_hostflags(ssl.get(), X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      ok = SSL_set1_host(ssl.get(), name.c_str()) == 1;
    }
  } else if (verify_ && !ip.empty()) {
    ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl.get()), ip.c_str()) == 1;
  }
  if (!ok) {
    ERR_clear_error();
    return nullptr;
  }
  SSL_set_connect_state(ssl.get());
  return ssl.release();
}

void ClientContext::forget_session(SSL* ssl) noexcept {
  auto* cache = static_cast<conf::SslSessionPtr*>(SSL_get_ex_data(ssl, cache_index()));
  if (cache == nullptr) return;
  cache->reset();
  SSL_set_ex_data(ssl, cache_index(), nullptr);
}

std::string ClientContext::verify_error(SSL* ssl) {
  const long result = SSL_get_verify_result(ssl);
  std::string out = X509_verify_cert_error_string(result);
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  if (result == X509_V_ERR_HOSTNAME_MISMATCH) {
    if (const char* host = X509_VERIFY_PARAM_get0_host(param, 0)) {
      out += " (expected \"" + std::string(host) + "\")";
    }
  } else if (result == X509_V_ERR_IP_ADDRESS_MISMATCH) {
    if (char* ip = X509_VERIFY_PARAM_get1_ip_asc(param)) {
      out += " (expected " + std::string(ip) + ")";
      OPENSSL_free(ip);
    }
  }
  return out;
}

}  // namespace ferry::worker::tls
