// The OpenSSL checks of TLS settings made at load (so that `ferry -t` and a reload fail on them),
// and the loading of a certificate and its key, shared with the worker's contexts.
#pragma once

#include <openssl/ssl.h>

#include <string>

#include "conf/tls_settings.h"

namespace ferry::conf {

// OpenSSL's reason for the first error in this thread's queue ("no reason given" when empty);
// the queue is cleared.
std::string openssl_error();

// Why a certificate and its key did not load: the text names the file and OpenSSL's reason.
struct PairError {
  std::string text;
  bool in_key = false;  // the key's fault (unreadable, or not the certificate's), not the chain's
};

// Loads the PEM chain `pair.certificate` (leaf first) and the PEM key `pair.key` into `ctx`,
// after checking that the key is the leaf's. False with `error` when any of it fails.
bool load_certificate_pair(SSL_CTX* ctx, const CertificatePair& pair, PairError& error);
// The same on a scratch context: error.text is "" when the pair is good.
PairError check_certificate_pair(const CertificatePair& pair);

// What a certificate's leaf is chosen by: the names it serves (its DNS subjectAltNames, else its
// CN, lowercase, sorted, each once) and its key's type (EVP_PKEY_EC, EVP_PKEY_RSA...).
struct CertificateIdentity {
  std::vector<std::string> names;
  int key_type = 0;
};
// Reads the leaf of PEM file `path`; false with `error` (the file and OpenSSL's reason).
bool certificate_identity(const std::string& path, CertificateIdentity& out, std::string& error);

// Each "" when good, else what is wrong (OpenSSL's reason included), tried on a scratch context.
std::string check_ciphers(const std::string& ciphers);            // TLS 1.2 cipher list
std::string check_ciphersuites(const std::string& ciphersuites);  // TLS 1.3 suites
std::string check_ca_file(const std::string& path);               // PEM CA certificates

// The lowest and highest version of `protocols` as OpenSSL's TLS1_2_VERSION...
int min_version(const std::vector<TlsVersion>& protocols);
int max_version(const std::vector<TlsVersion>& protocols);

}  // namespace ferry::conf
