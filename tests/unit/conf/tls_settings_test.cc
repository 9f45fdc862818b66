// Tests of `tls` in proxies and upstreams (conf/schema_tls.cc, conf/tls_check.cc): defaults,
// every refusal at its FILE:LINE with OpenSSL's reason, and -T's round trip.
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "conf/loader.h"
#include "conf/printer.h"
#include "tests/support/process.h"
#include "tests/support/test_ca.h"

namespace ferry::conf {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string errors_of(const LoadResult& r) {
  std::string out;
  for (const auto& e : r.errors) out += e.to_string() + "\n";
  return out;
}

class TlsSettingsTest : public ::testing::Test {
 protected:
  TlsSettingsTest()
      : ca_(dir_.path()),
        ec_(ca_.issue("ec", {"a.test", "*.b.test"})),
        rsa_(ca_.issue("rsa", {"a.test", "*.b.test"}, {}, test::KeyType::rsa)),
        client_(ca_.issue("client", {"client.test"})) {}

  static std::string q(const std::string& s) { return "\"" + s + "\""; }
  std::string pair(const test::Issued& i) const {
    return "{ certificate = " + q(i.cert_path) + "; key = " + q(i.key_path) + "; }";
  }
  // A proxy whose `tls` group begins on line 3; `body` is its inside, from line 4 on.
  static std::string proxy_with(const std::string& body) {
    return "upstreams = ( { name = \"u\"; servers = ( { address = \"127.0.0.1:1\"; } ); } );\n"
           "proxies = ( { name = \"p\"; listen = \"127.0.0.1:7001\"; upstream = \"u\";\n"
           "  tls = {\n" +
           body + "\n  }; } );\n";
  }
  // An upstream whose `tls` group begins on line 2; `body` from line 3 on.
  static std::string upstream_with(const std::string& body) {
    return "upstreams = ( { name = \"u\"; servers = ( { address = \"127.0.0.1:1\"; } );\n"
           "  tls = {\n" +
           body + "\n  }; } );\n";
  }
  std::string certificates() const { return "certificates = ( " + pair(ec_) + " );"; }
  // The one error of loading `text`, which must fail.
  static std::string only_error(const std::string& text) {
    const LoadResult r = load_text(text, "t.conf", ".");
    EXPECT_FALSE(r.config);
    EXPECT_EQ(r.errors.size(), 1U) << errors_of(r);
    return r.errors.empty() ? "" : r.errors[0].to_string();
  }

  test::TempDir dir_;
  test::TestCa ca_;
  test::Issued ec_, rsa_, client_;
};

TEST_F(TlsSettingsTest, AProxyWithOnlyACertificateGetsEveryDefault) {
  const LoadResult r = load_text(proxy_with(certificates()), "t.conf", ".");
  ASSERT_TRUE(r.config) << errors_of(r);
  ASSERT_TRUE(r.config->proxies[0].tls);
  const ServerTls& t = *r.config->proxies[0].tls;
  ASSERT_EQ(t.certificates.size(), 1U);
  EXPECT_EQ(t.certificates[0].certificate, ec_.cert_path);
  EXPECT_EQ(t.certificates[0].key, ec_.key_path);
  EXPECT_EQ(t.versions.protocols, (std::vector{TlsVersion::tls1_2, TlsVersion::tls1_3}));
  EXPECT_EQ(t.versions.ciphers,
            "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-"
            "SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-"
            "POLY1305");
  EXPECT_EQ(t.versions.ciphersuites,
            "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256");
  EXPECT_TRUE(t.alpn.empty());
  EXPECT_EQ(t.client_ca, "");
  EXPECT_EQ(t.verify_client, VerifyClient::off);
  EXPECT_EQ(t.handshake_timeout, Msec{10'000});
  EXPECT_TRUE(t.session_tickets);
  EXPECT_EQ(t.session_ticket_lifetime, Msec{3'600'000});
  EXPECT_FALSE(t.versions.kernel_tls) << "kernel TLS is opt-in";
  EXPECT_FALSE(r.config->upstreams[0].tls);
}

TEST_F(TlsSettingsTest, EverySettingIsRead) {
  const LoadResult r = load_text(
      proxy_with(
          "certificates = ( " + pair(ec_) + ", " + pair(rsa_) +
          " );\nprotocols = [ \"TLSv1.3\" ];\nalpn = [ \"h2\", \"http/1.1\" ];\n"
          "client_ca = " +
          q(ca_.cert_path()) +
          ";\nhandshake_timeout = \"2s\";\nsession_tickets = false;\n"
          "session_ticket_lifetime = \"30m\";\nciphers = \"ECDHE-ECDSA-AES128-GCM-SHA256\";\n"
          "kernel_tls = true;"),
      "t.conf", ".");
  ASSERT_TRUE(r.config) << errors_of(r);
  const ServerTls& t = *r.config->proxies[0].tls;
  EXPECT_EQ(t.certificates.size(), 2U);
  EXPECT_EQ(t.versions.protocols, std::vector{TlsVersion::tls1_3});
  EXPECT_EQ(t.alpn, (std::vector<std::string>{"h2", "http/1.1"}));
  EXPECT_EQ(t.client_ca, ca_.cert_path());
  EXPECT_EQ(t.verify_client, VerifyClient::on) << "a client_ca alone means on";
  EXPECT_EQ(t.handshake_timeout, Msec{2'000});
  EXPECT_FALSE(t.session_tickets);
  EXPECT_EQ(t.session_ticket_lifetime, Msec{1'800'000});
  EXPECT_EQ(t.versions.ciphers, "ECDHE-ECDSA-AES128-GCM-SHA256");
  EXPECT_TRUE(t.versions.kernel_tls);

  const LoadResult optional =
      load_text(proxy_with(certificates() + "\nclient_ca = " + q(ca_.cert_path()) +
                           ";\nverify_client = \"optional\";"),
                "t.conf", ".");
  ASSERT_TRUE(optional.config) << errors_of(optional);
  EXPECT_EQ(optional.config->proxies[0].tls->verify_client, VerifyClient::optional);
}

TEST_F(TlsSettingsTest, AnUpstreamsTlsDefaultsAndSettings) {
  LoadResult r = load_text(upstream_with(""), "t.conf", ".");
  ASSERT_TRUE(r.config) << errors_of(r);
  ASSERT_TRUE(r.config->upstreams[0].tls);
  const ClientTls& d = *r.config->upstreams[0].tls;
  EXPECT_TRUE(d.verify);
  EXPECT_EQ(d.ca, "");
  EXPECT_EQ(d.server_name, "");
  EXPECT_EQ(d.client_certificate, CertificatePair{});
  EXPECT_EQ(d.versions, TlsProtocols{});
  EXPECT_FALSE(d.versions.kernel_tls) << "kernel TLS is opt-in";
  EXPECT_TRUE(d.session_reuse) << "sessions are reused unless turned off";

  r = load_text(upstream_with("verify = false;\nca = " + q(ca_.cert_path()) +
                              ";\nserver_name = \"db.internal\";\ncertificate = " +
                              q(client_.cert_path) + ";\nkey = " + q(client_.key_path) +
                              ";\nprotocols = \"TLSv1.2\";\nkernel_tls = true;\n"
                              "session_reuse = false;"),
                "t.conf", ".");
  ASSERT_TRUE(r.config) << errors_of(r);
  const ClientTls& t = *r.config->upstreams[0].tls;
  EXPECT_FALSE(t.verify);
  EXPECT_EQ(t.ca, ca_.cert_path());
  EXPECT_EQ(t.server_name, "db.internal");
  EXPECT_EQ(t.client_certificate, (CertificatePair{client_.cert_path, client_.key_path}));
  EXPECT_EQ(t.versions.protocols, std::vector{TlsVersion::tls1_2});
  EXPECT_TRUE(t.versions.kernel_tls);
  EXPECT_FALSE(t.session_reuse);

  EXPECT_EQ(only_error(upstream_with("session_reuse = \"on\";")),
            "t.conf:3: upstreams.[0].tls.session_reuse: expected true or false, found a string");
}

TEST_F(TlsSettingsTest, CertificateAndKeyFailuresNameTheFileTheLineAndOpenSslsReason) {
  const std::string missing = dir_.path() + "/missing.pem";
  EXPECT_EQ(only_error(proxy_with("certificates = (\n{ certificate = " + q(missing) +
                                  ";\n  key = " + q(ec_.key_path) + "; } );")),
            "t.conf:5: proxies.[0].tls.certificates.[0].certificate: certificate " + q(missing) +
                ": No such file or directory");

  const std::string junk = dir_.write("junk.pem", "not a certificate\n");
  EXPECT_EQ(only_error(proxy_with("certificates = (\n{ certificate = " + q(junk) +
                                  ";\n  key = " + q(ec_.key_path) + "; } );")),
            "t.conf:5: proxies.[0].tls.certificates.[0].certificate: certificate " + q(junk) +
                ": no start line");

  EXPECT_EQ(only_error(proxy_with("certificates = (\n{ certificate = " + q(ec_.cert_path) +
                                  ";\n  key = " + q(junk) + "; } );")),
            "t.conf:6: proxies.[0].tls.certificates.[0].key: key " + q(junk) +
                ": no PEM private key found (unsupported)");

  // Another ECDSA key, and a key of another type: both "does not match".
  const auto mismatch = [&](const std::string& key, const char* reason) {
    EXPECT_EQ(only_error(proxy_with("certificates = (\n{ certificate = " + q(ec_.cert_path) +
                                    ";\n  key = " + q(key) + "; } );")),
              "t.conf:6: proxies.[0].tls.certificates.[0].key: key " + q(key) +
                  " does not match certificate " + q(ec_.cert_path) + " (" + reason + ")");
  };
  mismatch(client_.key_path, "key values mismatch");
  mismatch(rsa_.key_path, "different key types");

  // An upstream's client certificate: the same checks.
  EXPECT_EQ(only_error(upstream_with("certificate = " + q(client_.cert_path) +
                                     ";\nkey = " + q(ec_.key_path) + ";"))
                .substr(0, 34),
            "t.conf:4: upstreams.[0].tls.key: k");
}

// Two certificates for the same names with the same key type: one would silently replace the
// other. The same names with an ECDSA and an RSA key, or other names, are fine.
TEST_F(TlsSettingsTest, ACertificateThatWouldReplaceAnotherIsRefused) {
  const test::Issued again = ca_.issue("ec-again", {"*.b.test", "A.test"});  // same names
  EXPECT_EQ(only_error(proxy_with("certificates = ( " + pair(ec_) + ",\n " + pair(rsa_) +
                                  ",\n { certificate = " + q(again.cert_path) +
                                  "; key = " + q(again.key_path) + "; } );")),
            "t.conf:6: proxies.[0].tls.certificates.[2].certificate: serves the same names with "
            "the same key type as " +
                q(ec_.cert_path) +
                ", which it would replace: give one other names or another key type, or drop "
                "it");
  const test::Issued other = ca_.issue("other", {"a.test"});  // a subset: other names
  const LoadResult r = load_text(
      proxy_with("certificates = ( " + pair(ec_) + ", " + pair(rsa_) + ", " + pair(other) + " );"),
      "t.conf", ".");
  EXPECT_TRUE(r.config) << errors_of(r);
}

TEST_F(TlsSettingsTest, SuitesCaFilesAndVersionsAreRefusedAtTheirLine) {
  EXPECT_EQ(only_error(proxy_with(certificates() + "\nciphers = \"NOPE-CIPHER\";")),
            "t.conf:5: proxies.[0].tls.ciphers: no usable TLS 1.2 cipher in \"NOPE-CIPHER\": no "
            "cipher match");
  EXPECT_THAT(only_error(proxy_with(certificates() + "\nciphersuites = \"TLS_NOPE\";")),
              StartsWith("t.conf:5: proxies.[0].tls.ciphersuites: not a TLS 1.3 ciphersuite list "
                         "\"TLS_NOPE\": "));
  const std::string junk = dir_.write("junk-ca.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
  EXPECT_THAT(only_error(proxy_with(certificates() + "\nclient_ca = " + q(junk) + ";")),
              StartsWith("t.conf:5: proxies.[0].tls.client_ca: CA file " + q(junk) + ": "));
  EXPECT_EQ(only_error(upstream_with("ca = " + q(dir_.path() + "/none.pem") + ";")),
            "t.conf:3: upstreams.[0].tls.ca: CA file " + q(dir_.path() + "/none.pem") +
                ": No such file or directory");

  for (const char* old : {"SSLv3", "TLSv1", "TLSv1.1"}) {
    EXPECT_EQ(only_error(
                  proxy_with(certificates() + "\nprotocols = [ \"TLSv1.2\",\n \"" + old + "\" ];")),
              std::string("t.conf:6: proxies.[0].tls.protocols.[1]: \"") + old +
                  "\" is refused: SSLv3, TLS 1.0 and TLS 1.1 are broken (allowed: \"TLSv1.2\", "
                  "\"TLSv1.3\")");
  }
  EXPECT_EQ(only_error(upstream_with("protocols = \"TLSv9\";")),
            "t.conf:3: upstreams.[0].tls.protocols: \"TLSv9\" is not one of \"TLSv1.2\", "
            "\"TLSv1.3\"");
  EXPECT_EQ(only_error(upstream_with("protocols = [ ];")),
            "t.conf:3: upstreams.[0].tls.protocols: no protocol listed");
}

TEST_F(TlsSettingsTest, MissingAndUnknownSettingsAndInconsistencies) {
  EXPECT_EQ(only_error(proxy_with("alpn = [ \"h2\" ];")),
            "t.conf:3: proxies.[0].tls.certificates: missing: a TLS proxy needs at least one "
            "certificate and its key");
  EXPECT_EQ(only_error(proxy_with("certificates = ( );")),
            "t.conf:4: proxies.[0].tls.certificates: a TLS proxy needs at least one certificate");
  EXPECT_EQ(only_error(proxy_with(certificates() + "\ncipher = \"x\";")),
            "t.conf:5: proxies.[0].tls.cipher: unknown setting; did you mean \"ciphers\"?");
  EXPECT_EQ(only_error(upstream_with("verfy = true;")),
            "t.conf:3: upstreams.[0].tls.verfy: unknown setting; did you mean \"verify\"?");
  const LoadResult misspelt = load_text(
      proxy_with("certificates = ( { certificate = " + q(ec_.cert_path) + "; keys = \"k\"; } );"),
      "t.conf", ".");
  EXPECT_EQ(errors_of(misspelt),
            "t.conf:4: proxies.[0].tls.certificates.[0].keys: unknown setting; did you mean "
            "\"key\"?\n"
            "t.conf:4: proxies.[0].tls.certificates.[0].key: missing: the certificate's private "
            "key file\n");
  EXPECT_EQ(only_error(proxy_with(certificates() + "\nverify_client = \"on\";")),
            "t.conf:5: proxies.[0].tls.verify_client: needs client_ca, the CA certificates the "
            "clients' certificates must chain to");
  EXPECT_EQ(only_error(proxy_with(certificates() + "\nverify_client = \"maybe\";")),
            "t.conf:5: proxies.[0].tls.verify_client: \"maybe\" is not one of \"off\", "
            "\"optional\", \"on\"");
  EXPECT_EQ(only_error(proxy_with(certificates() + "\nhandshake_timeout = \"0\";")),
            "t.conf:5: proxies.[0].tls.handshake_timeout: \"0\" is too short (at least 1ms)");
  EXPECT_EQ(only_error(proxy_with(certificates() + "\nkernel_tls = \"yes\";")),
            "t.conf:5: proxies.[0].tls.kernel_tls: expected true or false, found a string");
  EXPECT_EQ(only_error(upstream_with("kernel_tls = 1;")),
            "t.conf:3: upstreams.[0].tls.kernel_tls: expected true or false, found an integer");
  EXPECT_EQ(only_error(proxy_with(certificates() + "\nalpn = [ ];")),
            "t.conf:5: proxies.[0].tls.alpn: no protocol listed (leave alpn out not to negotiate "
            "ALPN)");
  EXPECT_EQ(only_error(upstream_with("certificate = " + q(client_.cert_path) + ";")),
            "t.conf:2: upstreams.[0].tls.key: missing: a client certificate needs its key");
  EXPECT_EQ(only_error("upstreams = ( { name = \"u\"; servers = ( { address = \"127.0.0.1:1\"; } );"
                       "\n tls = true; } );\n"),
            "t.conf:2: upstreams.[0].tls: expected a group { ... }, found a boolean");
}

// `ferry -s` reads the file without resolving names, possibly as a user who cannot read the
// keys: it opens none of the files either.
TEST_F(TlsSettingsTest, AReaderThatResolvesNothingOpensNoFile) {
  const std::string missing = dir_.path() + "/missing.pem";
  const std::string path = dir_.write(
      "f.conf", proxy_with("certificates = ( { certificate = " + q(missing) +
                           "; key = " + q(missing) + "; } );\nclient_ca = " + q(missing) + ";"));
  EXPECT_FALSE(load_file(path).config);
  const LoadResult r = load_file(path, HostNames::unresolved);
  ASSERT_TRUE(r.config) << errors_of(r);
  EXPECT_EQ(r.config->proxies[0].tls->certificates[0].key, missing);
}

TEST_F(TlsSettingsTest, DumpLoadsBackToAnEqualConfig) {
  const std::string text =
      "upstreams = ( { name = \"u\"; servers = ( { address = \"localhost:1\"; } );\n"
      "  tls = { verify = true; ca = " +
      q(ca_.cert_path()) +
      "; server_name = \"db.internal\"; certificate = " + q(client_.cert_path) +
      "; key = " + q(client_.key_path) +
      "; protocols = [ \"TLSv1.3\" ]; ciphersuites = \"TLS_AES_128_GCM_SHA256\"; "
      "kernel_tls = true; session_reuse = false; }; },\n"
      "  { name = \"v\"; servers = ( { address = \"127.0.0.1:2\"; } ); tls = { }; } );\n"
      "proxies = ( { name = \"p\"; listen = \"127.0.0.1:7001\"; upstream = \"u\";\n"
      "  tls = { certificates = ( " +
      pair(ec_) + ", " + pair(rsa_) + " ); alpn = [ \"h2\" ]; client_ca = " + q(ca_.cert_path()) +
      "; verify_client = \"optional\"; handshake_timeout = \"1500ms\"; session_tickets = false; "
      "session_ticket_lifetime = \"2h\"; protocols = [ \"TLSv1.3\", \"TLSv1.2\" ]; "
      "kernel_tls = true; }; },\n"
      "  { name = \"q\"; listen = \"127.0.0.1:7002\"; upstream = \"v\"; } );\n";
  const LoadResult first = load_text(text, "full.conf", ".");
  ASSERT_TRUE(first.config) << errors_of(first);
  const std::string dumped = to_text(*first.config);
  EXPECT_THAT(dumped, HasSubstr("verify_client = \"optional\";"));
  EXPECT_THAT(dumped, HasSubstr("protocols = [ \"TLSv1.2\", \"TLSv1.3\" ];"));
  const LoadResult second = load_text(dumped, "dumped.conf", ".");
  ASSERT_TRUE(second.config) << errors_of(second) << dumped;
  EXPECT_TRUE(*first.config == *second.config) << dumped;
  EXPECT_EQ(to_text(*second.config), dumped);
  EXPECT_EQ(first.config->proxies[0].tls->handshake_timeout, Msec{1'500});
  EXPECT_TRUE(first.config->upstreams[1].tls);
  EXPECT_FALSE(first.config->proxies[1].tls);
  EXPECT_TRUE(first.config->proxies[0].tls->versions.kernel_tls);
  EXPECT_TRUE(first.config->upstreams[0].tls->versions.kernel_tls);
  EXPECT_FALSE(first.config->upstreams[1].tls->versions.kernel_tls);
  EXPECT_THAT(dumped, HasSubstr("kernel_tls = true;"));
  EXPECT_THAT(dumped, HasSubstr("kernel_tls = false;"));
  EXPECT_FALSE(first.config->upstreams[0].tls->session_reuse);
  EXPECT_TRUE(first.config->upstreams[1].tls->session_reuse);
  EXPECT_THAT(dumped, HasSubstr("session_reuse = false;"));
  EXPECT_THAT(dumped, HasSubstr("session_reuse = true;"));
}

}  // namespace
}  // namespace ferry::conf
