// TestCa: keys generated with EVP_PKEY_Q_keygen, certificates built and signed with the X509
// API, written as PEM. Test code: any OpenSSL failure aborts with its reason.
#include "tests/support/test_ca.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "conf/openssl_ptr.h"

namespace ferry::test {
namespace {

using Key = conf::EvpPkeyPtr;
using Cert = conf::X509Ptr;

[[noreturn]] void fail(const char* what) {
  char reason[256] = "";
  ERR_error_string_n(ERR_get_error(), reason, sizeof reason);
  std::fprintf(stderr, "TestCa: %s: %s\n", what, reason);
  std::abort();
}

void check(bool ok, const char* what) {
  if (!ok) fail(what);
}

Key make_key(KeyType type) {
  Key key(type == KeyType::rsa ? EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048})
                               : EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  check(key != nullptr, "key generation");
  return key;
}

void add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  check(ext != nullptr && X509_add_ext(cert, ext, -1) == 1, "extension");
  X509_EXTENSION_free(ext);
}

Cert make_cert(EVP_PKEY* key, const std::string& cn, int days) {
  static long serial = 1;
  Cert cert(X509_new());
  check(cert != nullptr, "X509_new");
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial++);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 86400L * days);
  check(X509_set_pubkey(cert.get(), key) == 1, "X509_set_pubkey");
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("ferry tests"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  return cert;
}

void write_pem(const std::string& path, const std::vector<X509*>& certs, EVP_PKEY* key) {
  const conf::BioPtr bio(BIO_new_file(path.c_str(), "w"));
  check(bio != nullptr, "BIO_new_file");
  for (X509* c : certs) check(PEM_write_bio_X509(bio.get(), c) == 1, "PEM_write_bio_X509");
  if (key != nullptr) {
    check(PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) == 1,
          "PEM_write_bio_PrivateKey");
  }
}

}  // namespace

struct TestCa::Impl {
  Key key;
  Cert cert;
};

TestCa::TestCa(std::string dir, const std::string& name, KeyType key)
    : impl_(std::make_unique<Impl>()),
      dir_(std::move(dir)),
      cert_path_(dir_ + "/" + name + ".pem") {
  impl_->key = make_key(key);
  impl_->cert = make_cert(impl_->key.get(), "ferry test CA " + name, 30);
  X509* c = impl_->cert.get();
  check(X509_set_issuer_name(c, X509_get_subject_name(c)) == 1, "issuer");
  add_ext(c, c, NID_basic_constraints, "critical,CA:TRUE");
  add_ext(c, c, NID_key_usage, "critical,keyCertSign,cRLSign");
  add_ext(c, c, NID_subject_key_identifier, "hash");
  check(X509_sign(c, impl_->key.get(), EVP_sha256()) > 0, "X509_sign");
  write_pem(cert_path_, {c}, nullptr);
}

TestCa::~TestCa() = default;

Issued TestCa::issue(const std::string& name, const LeafSpec& spec) {
  const Key key = make_key(spec.key);
  std::string cn = spec.common_name;
  if (cn.empty()) cn = spec.dns.empty() ? name : spec.dns.front();
  const Cert cert = make_cert(key.get(), cn, spec.days);
  X509* ca = impl_->cert.get();
  check(X509_set_issuer_name(cert.get(), X509_get_subject_name(ca)) == 1, "issuer");
  add_ext(cert.get(), ca, NID_basic_constraints, "critical,CA:FALSE");
  add_ext(cert.get(), ca, NID_ext_key_usage, spec.client ? "clientAuth" : "serverAuth");
  add_ext(cert.get(), ca, NID_authority_key_identifier, "keyid");
  std::string san;
  for (const auto& d : spec.dns) san += (san.empty() ? "DNS:" : ",DNS:") + d;
  for (const auto& ip : spec.ips) san += (san.empty() ? "IP:" : ",IP:") + ip;
  if (spec.san && !san.empty()) add_ext(cert.get(), ca, NID_subject_alt_name, san);
  check(X509_sign(cert.get(), impl_->key.get(), EVP_sha256()) > 0, "X509_sign");
  Issued out{dir_ + "/" + name + ".pem", dir_ + "/" + name + ".key"};
  write_pem(out.cert_path, {cert.get(), ca}, nullptr);
  write_pem(out.key_path, {}, key.get());
  return out;
}

Issued TestCa::issue_client(const std::string& name) {
  LeafSpec spec;
  spec.common_name = name;
  spec.client = true;
  return issue(name, spec);
}

Issued TestCa::issue(const std::string& name, const std::vector<std::string>& dns,
                     const std::vector<std::string>& ips, KeyType key) {
  LeafSpec spec;
  spec.dns = dns;
  spec.ips = ips;
  spec.key = key;
  return issue(name, spec);
}

}  // namespace ferry::test
