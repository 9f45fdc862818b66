// TLS termination contexts: certificates grouped by the names they serve (their DNS
// subjectAltNames, or CN without any), the SNI read in the ClientHello callback choosing the
// group, and every group's context carrying the same versions, tickets, verification and ALPN.
#include "worker/tls/server_context.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <fstream>
#include <iterator>

#include "conf/openssl_ptr.h"
#include "conf/tls_check.h"
#include "worker/tls/context_common.h"
#include "worker/tls/ktls.h"

namespace ferry::worker::tls {
namespace {

constexpr std::size_t kMaxName = 255;

// Tells resumed sessions of different settings apart: a ticket of a proxy that checks client
// certificates against one CA must not resume at another with another CA — nor at this one
// after a reload with another CA in the same file (a resumption checks no certificate): the
// CA file's contents count, not only its path.
bool set_session_id_context(SSL_CTX* ctx, const conf::ServerTls& t, std::string& error) {
  std::string what;
  for (const auto& p : t.certificates) what += p.certificate + '\0' + p.key + '\0';
  what += t.client_ca + '\0' + static_cast<char>('0' + static_cast<int>(t.verify_client));
  if (!t.client_ca.empty()) {
    std::ifstream in(t.client_ca, std::ios::binary);
    what.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(what.data(), what.size(), digest, &length, EVP_sha256(), nullptr) != 1 ||
      SSL_CTX_set_session_id_context(ctx, digest,
                                     std::min<unsigned int>(length, SSL_MAX_SID_CTX_LENGTH)) != 1) {
    error = "cannot set the session id context: " + conf::openssl_error();
    return false;
  }
  return true;
}

bool set_client_verification(SSL_CTX* ctx, const conf::ServerTls& t, std::string& error) {
  if (t.verify_client == conf::VerifyClient::off) return true;
  if (SSL_CTX_load_verify_locations(ctx, t.client_ca.c_str(), nullptr) != 1) {
    error = "client_ca \"" + t.client_ca + "\": " + conf::openssl_error();
    return false;
  }
  // The CAs' names are sent in the CertificateRequest, for a client with several certificates.
  STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(t.client_ca.c_str());
  if (names == nullptr) {
    error = "client_ca \"" + t.client_ca + "\": " + conf::openssl_error();
    return false;
  }
  SSL_CTX_set_client_CA_list(ctx, names);
  int mode = SSL_VERIFY_PEER;
  if (t.verify_client == conf::VerifyClient::on) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
  SSL_CTX_set_verify(ctx, mode, nullptr);
  return true;
}

// The server_name extension's first host_name (RFC 6066 3), or "" when there is none.
std::string_view sni_of(const unsigned char* p, std::size_t length) {
  if (length < 2 || static_cast<std::size_t>((p[0] << 8) | p[1]) != length - 2) return {};
  for (std::size_t at = 2; at + 3 <= length;) {
    const std::size_t n = static_cast<std::size_t>((p[at + 1] << 8) | p[at + 2]);
    if (at + 3 + n > length) return {};
    if (p[at] == TLSEXT_NAMETYPE_host_name) {
      return {reinterpret_cast<const char*>(p + at + 3), n};
    }
    at += 3 + n;
  }
  return {};
}

}  // namespace

std::unique_ptr<ServerContext> ServerContext::create(const conf::ServerTls& settings,
                                                     std::shared_ptr<const TicketKeys> keys,
                                                     std::string& error) {
  std::unique_ptr<ServerContext> sc(new ServerContext());
  sc->ktls_ = settings.versions.kernel_tls && kernel_tls_usable();
  for (const std::string& p : settings.alpn) {
    if (p.empty() || p.size() > 255) {
      error = "ALPN protocol \"" + p + "\": not 1 to 255 bytes";
      return nullptr;
    }
    sc->alpn_ += static_cast<char>(p.size());
    sc->alpn_ += p;
  }
  if (settings.certificates.empty()) {
    error = "no certificate";
    return nullptr;
  }
  // Certificates serving the same names share a context (an ECDSA and an RSA one side by
  // side: OpenSSL picks by the client's signature algorithms).
  std::vector<std::vector<std::string>> group_names;
  for (const conf::CertificatePair& pair : settings.certificates) {
    conf::CertificateIdentity id;
    if (!conf::certificate_identity(pair.certificate, id, error)) return nullptr;
    std::vector<std::string>& names = id.names;
    auto at = std::find(group_names.begin(), group_names.end(), names);
    if (at == group_names.end()) {
      SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
      if (!ctx) {
        error = "cannot make an OpenSSL context: " + conf::openssl_error();
        return nullptr;
      }
      if (!sc->configure(ctx.get(), settings, keys, error)) return nullptr;
      sc->contexts_.push_back(std::move(ctx));
      at = group_names.insert(group_names.end(), std::move(names));
    }
    conf::PairError why;
    const auto index = static_cast<std::size_t>(at - group_names.begin());
    if (!conf::load_certificate_pair(sc->contexts_[index].get(), pair, why)) {
      error = why.text;
      return nullptr;
    }
  }
  for (std::size_t g = 0; g < group_names.size(); ++g) {
    for (const std::string& name : group_names[g]) {
      const bool taken = std::any_of(sc->names_.begin(), sc->names_.end(),
                                     [&](const auto& e) { return e.first == name; });
      if (!taken) sc->names_.emplace_back(name, g);
    }
  }
  std::sort(sc->names_.begin(), sc->names_.end());
  return sc;
}

bool ServerContext::configure(SSL_CTX* ctx, const conf::ServerTls& t,
                              const std::shared_ptr<const TicketKeys>& keys, std::string& error) {
  if (!set_common(ctx, t.versions, error)) return false;
  SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (!set_session_id_context(ctx, t, error)) return false;
  // Tickets only: no server-side cache to share between workers (TLS 1.3 resumes by ticket).
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  if (t.session_tickets) {
    // A ticket is accepted during its period and the next.
    const auto seconds =
        std::chrono::duration_cast<std::chrono::seconds>(t.session_ticket_lifetime);
    SSL_CTX_set_timeout(ctx, static_cast<long>(2 * seconds.count()));
    if (keys && !use_ticket_keys(ctx, keys, t.session_ticket_lifetime, error)) return false;
  } else {
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx, 0);
  }
  if (!set_client_verification(ctx, t, error)) return false;
  if (!alpn_.empty()) SSL_CTX_set_alpn_select_cb(ctx, on_alpn, this);
  SSL_CTX_set_client_hello_cb(ctx, on_client_hello, this);
  return true;
}

SSL* ServerContext::new_ssl(int fd) const {
  SslPtr ssl(SSL_new(contexts_.front().get()));
  // OpenSSL's reason stays queued for the caller's log (tls::take_error).
  if (!ssl || SSL_set_fd(ssl.get(), fd) != 1) return nullptr;
  SSL_set_accept_state(ssl.get());
  return ssl.release();
}

SSL_CTX* ServerContext::find(std::string_view name) const {
  const auto lookup = [&](std::string_view n) -> SSL_CTX* {
    const auto it = std::lower_bound(names_.begin(), names_.end(), n,
                                     [](const std::pair<std::string, std::size_t>& e,
                                        std::string_view k) { return e.first < k; });
    return it != names_.end() && it->first == n ? contexts_[it->second].get() : nullptr;
  };
  if (SSL_CTX* exact = lookup(name)) return exact;
  const std::size_t dot = name.find('.');
  if (dot != std::string_view::npos && dot > 0 && name.size() - dot < kMaxName) {
    char wildcard[kMaxName + 1];
    wildcard[0] = '*';
    name.substr(dot).copy(wildcard + 1, name.size() - dot);
    if (SSL_CTX* w = lookup({wildcard, name.size() - dot + 1})) return w;
  }
  return contexts_.front().get();
}

SSL_CTX* ServerContext::context_for(std::string_view name) const {
  char lower[kMaxName];
  if (name.size() > kMaxName) return contexts_.front().get();
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    lower[i] = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  }
  std::string_view n(lower, name.size());
  if (!n.empty() && n.back() == '.') n.remove_suffix(1);
  return find(n);
}

int ServerContext::on_client_hello(SSL* ssl, int* alert, void* arg) {
  const auto* self = static_cast<const ServerContext*>(arg);
  const unsigned char* ext = nullptr;
  std::size_t length = 0;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &ext, &length) != 1) {
    return SSL_CLIENT_HELLO_SUCCESS;  // no SNI: the default context serves
  }
  SSL_CTX* ctx = self->context_for(sni_of(ext, length));
  if (ctx != SSL_get_SSL_CTX(ssl) && SSL_set_SSL_CTX(ssl, ctx) == nullptr) {
    *alert = SSL_AD_INTERNAL_ERROR;
    return SSL_CLIENT_HELLO_ERROR;
  }
  return SSL_CLIENT_HELLO_SUCCESS;
}

int ServerContext::on_alpn(SSL*, const unsigned char** out, unsigned char* outlen,
                           const unsigned char* in, unsigned int inlen, void* arg) {
  const std::string& ours = static_cast<const ServerContext*>(arg)->alpn_;
  // The server's order decides, as nginx and HAProxy do.
  for (std::size_t i = 0; i < ours.size(); i += 1 + static_cast<unsigned char>(ours[i])) {
    const std::string_view want(ours.data() + i + 1, static_cast<unsigned char>(ours[i]));
    for (unsigned int j = 0; j < inlen; j += 1u + in[j]) {
      if (j + 1u + in[j] > inlen) break;
      if (std::string_view(reinterpret_cast<const char*>(in + j + 1), in[j]) == want) {
        *out = in + j + 1;
        *outlen = in[j];
        return SSL_TLSEXT_ERR_OK;
      }
    }
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;  // OpenSSL sends no_application_protocol
}

std::string ServerContext::client_subject(SSL* ssl) {
  X509* peer = SSL_get0_peer_certificate(ssl);
  if (peer == nullptr) return "";
  const conf::BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || X509_NAME_print_ex(bio.get(), X509_get_subject_name(peer), 0, XN_FLAG_RFC2253) < 0) {
    ERR_clear_error();
    return "";
  }
  char* data = nullptr;
  const long length = BIO_get_mem_data(bio.get(), &data);
  return length > 0 ? std::string(data, static_cast<std::size_t>(length)) : "";
}

std::string_view ServerContext::version(SSL* ssl) { return SSL_get_version(ssl); }

std::string_view ServerContext::server_name(SSL* ssl) {
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  return name != nullptr ? name : "";
}

}  // namespace ferry::worker::tls
