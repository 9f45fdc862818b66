// OpenSSL checks of the TLS settings at load: certificates and keys loaded and matched, cipher
// lists and CA files tried on a scratch context. Every path clears OpenSSL's error queue.
#include "conf/tls_check.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

#include "conf/openssl_ptr.h"

namespace ferry::conf {
namespace {

std::string quoted(const std::string& path) { return "\"" + path + "\""; }

// Runs `try_it` on a fresh context: "" when it returns true, else `what` and OpenSSL's reason.
template <typename Try>
std::string on_scratch(const std::string& what, Try&& try_it) {
  ERR_clear_error();
  const SslCtxPtr ctx(SSL_CTX_new(TLS_method()));
  if (!ctx) return "cannot make an OpenSSL context: " + openssl_error();
  if (try_it(ctx.get())) {
    ERR_clear_error();
    return "";
  }
  return what + ": " + openssl_error();
}

std::string lowercase(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  return out;
}

void add_name(const ASN1_STRING* s, std::vector<std::string>& out) {
  const auto* data = reinterpret_cast<const char*>(ASN1_STRING_get0_data(s));
  const int length = ASN1_STRING_length(s);
  if (data != nullptr && length > 0) out.push_back(lowercase({data, std::size_t(length)}));
}

}  // namespace

bool certificate_identity(const std::string& path, CertificateIdentity& out, std::string& error) {
  ERR_clear_error();
  out = {};
  const BioPtr bio(BIO_new_file(path.c_str(), "r"));
  const X509Ptr leaf(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!leaf) {
    error = "certificate " + quoted(path) + ": " + openssl_error();
    return false;
  }
  const GeneralNamesPtr sans(static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(leaf.get(), NID_subject_alt_name, nullptr, nullptr)));
  for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans.get()); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(sans.get(), i);
    if (n->type == GEN_DNS) add_name(n->d.dNSName, out.names);
  }
  if (out.names.empty()) {  // as browsers did before SANs, and HAProxy still does
    const X509_NAME* subject = X509_get_subject_name(leaf.get());
    const int at = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    if (at >= 0) add_name(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, at)), out.names);
  }
  if (const EVP_PKEY* key = X509_get0_pubkey(leaf.get())) out.key_type = EVP_PKEY_get_base_id(key);
  ERR_clear_error();
  std::sort(out.names.begin(), out.names.end());
  out.names.erase(std::unique(out.names.begin(), out.names.end()), out.names.end());
  return true;
}

std::string openssl_error() {
  const unsigned long code = ERR_peek_error();
  std::string out;
  if (code == 0) {
    out = "no reason given";
  } else if (ERR_SYSTEM_ERROR(code)) {
    out = std::strerror(static_cast<int>(ERR_GET_REASON(code)));
  } else if (const char* reason = ERR_reason_error_string(code)) {
    out = reason;
  } else {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof buf);
    out = buf;
  }
  ERR_clear_error();
  return out;
}

bool load_certificate_pair(SSL_CTX* ctx, const CertificatePair& pair, PairError& error) {
  ERR_clear_error();
  if (SSL_CTX_use_certificate_chain_file(ctx, pair.certificate.c_str()) != 1) {
    error = {"certificate " + quoted(pair.certificate) + ": " + openssl_error(), false};
    return false;
  }
  // Read here rather than with SSL_CTX_use_PrivateKey_file: a key of another type than the
  // certificate would go to another slot and only fail later with a misleading reason.
  const BioPtr bio(BIO_new_file(pair.key.c_str(), "r"));
  EvpPkeyPtr key;
  if (bio) key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    // OpenSSL 3's decoders say only "unsupported" of a file holding no key they can read.
    const unsigned long code = ERR_peek_error();
    const bool unreadable = ERR_GET_LIB(code) == ERR_LIB_OSSL_DECODER;
    error = {
        "key " + quoted(pair.key) + ": " +
            (unreadable ? "no PEM private key found (" + openssl_error() + ")" : openssl_error()),
        true};
    return false;
  }
  X509* leaf = SSL_CTX_get0_certificate(ctx);
  if (leaf == nullptr || X509_check_private_key(leaf, key.get()) != 1) {
    error = {"key " + quoted(pair.key) + " does not match certificate " + quoted(pair.certificate) +
                 " (" + openssl_error() + ")",
             true};
    return false;
  }
  if (SSL_CTX_use_PrivateKey(ctx, key.get()) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
    error = {"key " + quoted(pair.key) + ": " + openssl_error(), true};
    return false;
  }
  ERR_clear_error();
  return true;
}

PairError check_certificate_pair(const CertificatePair& pair) {
  ERR_clear_error();
  const SslCtxPtr ctx(SSL_CTX_new(TLS_method()));
  if (!ctx) return {"cannot make an OpenSSL context: " + openssl_error(), false};
  PairError error;
  load_certificate_pair(ctx.get(), pair, error);
  return error;
}

std::string check_ciphers(const std::string& ciphers) {
  return on_scratch("no usable TLS 1.2 cipher in \"" + ciphers + "\"", [&](SSL_CTX* ctx) {
    return SSL_CTX_set_cipher_list(ctx, ciphers.c_str()) == 1;
  });
}

std::string check_ciphersuites(const std::string& ciphersuites) {
  return on_scratch("not a TLS 1.3 ciphersuite list \"" + ciphersuites + "\"", [&](SSL_CTX* ctx) {
    // OpenSSL accepts a list whose every name is unknown as an empty one: that is refused too.
    if (SSL_CTX_set_ciphersuites(ctx, ciphersuites.c_str()) != 1) return false;
    const STACK_OF(SSL_CIPHER)* list = SSL_CTX_get_ciphers(ctx);
    for (int i = 0; list != nullptr && i < sk_SSL_CIPHER_num(list); ++i) {
      if (std::strcmp(SSL_CIPHER_get_version(sk_SSL_CIPHER_value(list, i)), "TLSv1.3") == 0) {
        return true;
      }
    }
    ERR_raise(ERR_LIB_SSL, SSL_R_NO_CIPHER_MATCH);
    return false;
  });
}

std::string check_ca_file(const std::string& path) {
  return on_scratch("CA file " + quoted(path), [&](SSL_CTX* ctx) {
    return SSL_CTX_load_verify_locations(ctx, path.c_str(), nullptr) == 1;
  });
}

int min_version(const std::vector<TlsVersion>& protocols) {
  return std::find(protocols.begin(), protocols.end(), TlsVersion::tls1_2) != protocols.end()
             ? TLS1_2_VERSION
             : TLS1_3_VERSION;
}

int max_version(const std::vector<TlsVersion>& protocols) {
  return std::find(protocols.begin(), protocols.end(), TlsVersion::tls1_3) != protocols.end()
             ? TLS1_3_VERSION
             : TLS1_2_VERSION;
}

}  // namespace ferry::conf
