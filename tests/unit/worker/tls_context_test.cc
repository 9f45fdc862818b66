// Tests of worker/tls's server and client contexts over real socketpairs: the certificate the
// SNI and the client's signature algorithms choose, versions, ALPN, client certificates,
// renegotiation refused, the client's verification of names and addresses, and kTLS detection.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "tests/support/process.h"
#include "tests/support/test_ca.h"
#include "tests/unit/worker/tls_pair.h"
#include "worker/tls/client_context.h"
#include "worker/tls/ktls.h"
#include "worker/tls/server_context.h"

namespace ferry::worker::tls {
namespace {

using test::KeyType;
using ::testing::HasSubstr;

class TlsContextTest : public ::testing::Test {
 protected:
  TlsContextTest() : ca_(dir_.path()), other_ca_(dir_.path(), "other-ca") {
    const auto pair = [](const test::Issued& i) {
      return conf::CertificatePair{i.cert_path, i.key_path};
    };
    settings_.certificates = {pair(ca_.issue("default", {"default.test"})),
                              pair(ca_.issue("a-ec", {"a.test", "*.b.test"})),
                              pair(ca_.issue("a-rsa", {"a.test", "*.b.test"}, {}, KeyType::rsa))};
    test::LeafSpec cn_only;
    cn_only.common_name = "c.test";
    cn_only.san = false;
    settings_.certificates.push_back(pair(ca_.issue("c", cn_only)));
    test::LeafSpec client;
    client.dns = {"client.test"};
    client.client = true;
    client_ = ca_.issue("client", client);
    stranger_ = other_ca_.issue("stranger", client);
  }

  std::unique_ptr<ServerContext> server(const conf::ServerTls& settings) {
    std::string error;
    auto sc = ServerContext::create(settings, TicketKeys::create(), error);
    EXPECT_TRUE(sc) << error;
    return sc;
  }
  // A handshake of a client of `ctx` sending `sni` with a server of `sc`.
  Outcome connect(TlsPair& p, const ServerContext& sc, SSL_CTX* ctx, const std::string& sni = "") {
    p.client = client_ssl(ctx, p.client_fd, sni);
    p.server.reset(sc.new_ssl(p.server_fd));
    return p.handshake();
  }

  test::TempDir dir_;
  test::TestCa ca_;
  test::TestCa other_ca_;
  conf::ServerTls settings_;
  test::Issued client_, stranger_;
};

TEST_F(TlsContextTest, TheSniChoosesTheCertificateExactWildcardOrTheDefault) {
  const auto sc = server(settings_);
  const SslCtxPtr ctx = client_ctx(TLS1_2_VERSION, TLS1_3_VERSION, ca_.cert_path());
  for (const auto& [sni, cn] : std::vector<std::pair<std::string, std::string>>{
           {"a.test", "a.test"},
           {"A.Test", "a.test"},
           {"x.b.test", "a.test"},
           {"b.test", "default.test"},      // "*.b.test" is not b.test itself
           {"y.x.b.test", "default.test"},  // nor two labels deep
           {"c.test", "c.test"},            // its CN, having no subjectAltName
           {"nowhere.test", "default.test"},
           {"", "default.test"}}) {
    TlsPair p;
    const Outcome o = connect(p, *sc, ctx.get(), sni);
    ASSERT_TRUE(o.ok()) << sni << ": " << o.client << " / " << o.server;
    EXPECT_EQ(peer_cn(p.client.get()), cn) << sni;
    EXPECT_EQ(ServerContext::server_name(p.server.get()), sni);
  }
  EXPECT_EQ(sc->context_for("A.TEST."), sc->context_for("a.test"));
  EXPECT_NE(sc->context_for("a.test"), sc->context_for("default.test"));
}

TEST_F(TlsContextTest, EcdsaOrRsaByTheClientsSignatureAlgorithms) {
  const auto sc = server(settings_);
  for (const int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    for (const auto& [sigalgs, type] :
         std::vector<std::pair<const char*, int>>{{"ECDSA+SHA256", EVP_PKEY_EC},
                                                  {"RSA-PSS+SHA256:RSA+SHA256", EVP_PKEY_RSA},
                                                  {"ECDSA+SHA256:RSA-PSS+SHA256", EVP_PKEY_EC}}) {
      const SslCtxPtr ctx = client_ctx(version, version, ca_.cert_path());
      ASSERT_EQ(SSL_CTX_set1_sigalgs_list(ctx.get(), sigalgs), 1);
      TlsPair p;
      const Outcome o = connect(p, *sc, ctx.get(), "a.test");
      ASSERT_TRUE(o.ok()) << sigalgs << ": " << o.client << " / " << o.server;
      EXPECT_EQ(peer_key_type(p.client.get()), type) << sigalgs << " " << version;
    }
  }
}

TEST_F(TlsContextTest, TlsOneTwoAndOneThreeAreServedAndOneOneIsRefused) {
  const auto sc = server(settings_);
  for (const auto& [version, name] : std::vector<std::pair<int, std::string>>{
           {TLS1_2_VERSION, "TLSv1.2"}, {TLS1_3_VERSION, "TLSv1.3"}}) {
    const SslCtxPtr ctx = client_ctx(version, version);
    TlsPair p;
    ASSERT_TRUE(connect(p, *sc, ctx.get()).ok()) << name;
    EXPECT_EQ(ServerContext::version(p.server.get()), name);
  }
  const SslCtxPtr old = client_ctx(TLS1_1_VERSION, TLS1_1_VERSION);
  SSL_CTX_set_security_level(old.get(), 0);  // a client that still offers TLS 1.1
  TlsPair p;
  const Outcome o = connect(p, *sc, old.get());
  EXPECT_THAT(o.server, HasSubstr("unsupported protocol"));
  EXPECT_FALSE(o.client.empty());

  conf::ServerTls only13 = settings_;
  only13.versions.protocols = {conf::TlsVersion::tls1_3};
  const auto sc13 = server(only13);
  const SslCtxPtr v12 = client_ctx(TLS1_2_VERSION, TLS1_2_VERSION);
  TlsPair q;
  EXPECT_THAT(connect(q, *sc13, v12.get()).server, HasSubstr("unsupported protocol"));
}

TEST_F(TlsContextTest, AlpnIsTheServersPreferenceAndNoCommonProtocolFails) {
  conf::ServerTls with_alpn = settings_;
  with_alpn.alpn = {"h2", "http/1.1"};
  const auto sc = server(with_alpn);
  const auto offer = [&](const std::string& wire) {
    const SslCtxPtr ctx = client_ctx();
    if (!wire.empty()) {
      SSL_CTX_set_alpn_protos(ctx.get(), reinterpret_cast<const unsigned char*>(wire.data()),
                              static_cast<unsigned>(wire.size()));
    }
    auto p = std::make_unique<TlsPair>();
    const Outcome o = connect(*p, *sc, ctx.get());
    const unsigned char* chosen = nullptr;
    unsigned length = 0;
    if (o.ok()) SSL_get0_alpn_selected(p->server.get(), &chosen, &length);
    return std::pair{o, std::string(reinterpret_cast<const char*>(chosen), length)};
  };
  EXPECT_EQ(offer(std::string("\x08http/1.1\x02h2", 12)).second, "h2");
  EXPECT_EQ(offer(std::string("\x08http/1.1", 9)).second, "http/1.1");
  const auto [refused, none] = offer(std::string("\x02h3", 3));
  EXPECT_THAT(refused.client, HasSubstr("no application protocol"));
  EXPECT_FALSE(refused.server.empty());
  // A client that offers no ALPN at all is served without it.
  const auto [plain, nothing] = offer("");
  EXPECT_TRUE(plain.ok()) << plain.client << " / " << plain.server;
  EXPECT_EQ(nothing, "");
}

TEST_F(TlsContextTest, ClientCertificatesRequiredOptionalAndUntrusted) {
  conf::ServerTls mtls = settings_;
  mtls.client_ca = ca_.cert_path();
  mtls.verify_client = conf::VerifyClient::on;
  const auto sc = server(mtls);
  const auto with_cert = [](const test::Issued* cert, int version) {
    SslCtxPtr ctx = client_ctx(version, version);
    if (cert != nullptr) {
      SSL_CTX_use_certificate_chain_file(ctx.get(), cert->cert_path.c_str());
      SSL_CTX_use_PrivateKey_file(ctx.get(), cert->key_path.c_str(), SSL_FILETYPE_PEM);
    }
    return ctx;
  };
  for (const int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    TlsPair none;
    EXPECT_THAT(connect(none, *sc, with_cert(nullptr, version).get()).server,
                HasSubstr("peer did not return a certificate"));
    TlsPair good;
    const Outcome o = connect(good, *sc, with_cert(&client_, version).get());
    ASSERT_TRUE(o.ok()) << o.client << " / " << o.server;
    EXPECT_EQ(ServerContext::client_subject(good.server.get()), "CN=client.test,O=ferry tests");
    TlsPair stranger;
    EXPECT_THAT(connect(stranger, *sc, with_cert(&stranger_, version).get()).server,
                HasSubstr("certificate verify failed"));
  }
  mtls.verify_client = conf::VerifyClient::optional;
  const auto optional = server(mtls);
  TlsPair none;
  ASSERT_TRUE(connect(none, *optional, with_cert(nullptr, TLS1_3_VERSION).get()).ok());
  EXPECT_EQ(ServerContext::client_subject(none.server.get()), "");
}

TEST_F(TlsContextTest, ATlsOneTwoRenegotiationIsRefused) {
  const auto sc = server(settings_);
  const SslCtxPtr ctx = client_ctx(TLS1_2_VERSION, TLS1_2_VERSION);
  TlsPair p;
  ASSERT_TRUE(connect(p, *sc, ctx.get()).ok());
  ASSERT_EQ(SSL_renegotiate(p.client.get()), 1);
  char c;
  const Outcome o = p.drive(
      [&](SSL* s) { return s == p.client.get() ? SSL_do_handshake(s) : SSL_read(s, &c, 1); });
  EXPECT_THAT(o.client, HasSubstr("no renegotiation"));
  EXPECT_EQ(SSL_num_renegotiations(p.server.get()), 0);
}

TEST_F(TlsContextTest, TheClientVerifiesTheNameOrTheAddress) {
  const test::Issued db = ca_.issue("db", {"db.test"}, {"127.0.0.1", "::1"});
  conf::ServerTls one;
  one.certificates = {{db.cert_path, db.key_path}};
  const auto sc = server(one);
  std::string sni;  // what the server was sent
  const auto dial = [&](const conf::ClientTls& settings, std::string_view host, std::string_view ip,
                        std::string* why = nullptr) {
    std::string error;
    const auto cc = ClientContext::create(settings, error);
    EXPECT_TRUE(cc) << error;
    TlsPair p;
    p.client.reset(cc->new_ssl(p.client_fd, host, ip));
    p.server.reset(sc->new_ssl(p.server_fd));
    const Outcome o = p.handshake();
    if (why != nullptr) *why = ClientContext::verify_error(p.client.get());
    sni = ServerContext::server_name(p.server.get());
    return o;
  };
  conf::ClientTls trusting;
  trusting.ca = ca_.cert_path();
  EXPECT_TRUE(dial(trusting, "db.test", "10.0.0.1").ok());
  EXPECT_EQ(sni, "db.test");
  std::string why;
  EXPECT_FALSE(dial(trusting, "wrong.test", "10.0.0.1", &why).client.empty());
  EXPECT_EQ(why, "hostname mismatch (expected \"wrong.test\")");
  // A literal address: verified as an IP subjectAltName, no SNI sent.
  EXPECT_TRUE(dial(trusting, "", "127.0.0.1").ok());
  EXPECT_TRUE(dial(trusting, "", "::1").ok());
  EXPECT_EQ(sni, "");
  EXPECT_TRUE(dial(trusting, "127.0.0.1", "127.0.0.1").ok());
  EXPECT_EQ(sni, "") << "an address is never sent as SNI";
  EXPECT_FALSE(dial(trusting, "", "127.0.0.2", &why).client.empty());
  EXPECT_EQ(why, "IP address mismatch (expected 127.0.0.2)");
  // server_name stands for every server's name.
  conf::ClientTls named = trusting;
  named.server_name = "db.test";
  EXPECT_TRUE(dial(named, "other.test", "127.0.0.2").ok());
  EXPECT_EQ(sni, "db.test");

  conf::ClientTls stranger;
  stranger.ca = other_ca_.cert_path();
  EXPECT_FALSE(dial(stranger, "db.test", "", &why).client.empty());
  EXPECT_EQ(why, "self-signed certificate in certificate chain");
  stranger.verify = false;
  EXPECT_TRUE(dial(stranger, "wrong.test", "").ok());
}

TEST_F(TlsContextTest, AContextThatCannotBeBuiltSaysWhichFileAndWhy) {
  conf::ServerTls bad = settings_;
  bad.certificates[1].key = bad.certificates[0].key;
  std::string error;
  EXPECT_FALSE(ServerContext::create(bad, nullptr, error));
  EXPECT_THAT(error, HasSubstr("does not match certificate \"" + bad.certificates[1].certificate));
  conf::ClientTls client;
  client.ca = dir_.path() + "/none.pem";
  EXPECT_FALSE(ClientContext::create(client, error));
  EXPECT_EQ(error, "ca \"" + client.ca + "\": No such file or directory");
}

TEST_F(TlsContextTest, KernelTlsIsDetectedFromTheUlpListAndTheSocket) {
  EXPECT_TRUE(ulp_list_has_tls("mptcp tls"));
  EXPECT_TRUE(ulp_list_has_tls("tls\n"));
  EXPECT_FALSE(ulp_list_has_tls("mptcp"));
  EXPECT_FALSE(ulp_list_has_tls("tlsx espintcp"));
  EXPECT_FALSE(ulp_list_has_tls(""));
  std::string why;
  const bool available = kernel_tls_available(why);
  EXPECT_EQ(available, kernel_tls_usable());
  std::ifstream in("/proc/sys/net/ipv4/tcp_available_ulp");
  std::string list;
  std::getline(in, list);
  if (!available) {
    EXPECT_THAT(why, HasSubstr("\"tls\" ULP")) << why;
    if (!ulp_list_has_tls(list)) {
      EXPECT_THAT(why, HasSubstr("\"" + list + "\""));
    }
  } else {
    EXPECT_EQ(why, "");
  }
  // Asked for (kernel_tls = true), the contexts follow the detection; OpenSSL then says whether
  // a connection uses it.
  conf::ServerTls asked = settings_;
  asked.versions.kernel_tls = true;
  const auto sc = server(asked);
  EXPECT_EQ(sc->kernel_tls(), available);
  EXPECT_EQ((SSL_CTX_get_options(sc->context_for("")) & SSL_OP_ENABLE_KTLS) != 0, available);
  TlsPair p;
  const SslCtxPtr ctx = client_ctx();
  ASSERT_TRUE(connect(p, *sc, ctx.get()).ok());
  if (!available) {
    EXPECT_FALSE(BIO_get_ktls_send(SSL_get_wbio(p.server.get())));
  }
}

// Kernel TLS is opt-in: without kernel_tls = true neither direction's context sets
// SSL_OP_ENABLE_KTLS, whatever the kernel offers.
TEST_F(TlsContextTest, KernelTlsIsOffUnlessAskedFor) {
  const auto sc = server(settings_);
  EXPECT_FALSE(sc->kernel_tls());
  for (const char* name : {"", "a.test", "c.test"}) {
    EXPECT_EQ(SSL_CTX_get_options(sc->context_for(name)) & SSL_OP_ENABLE_KTLS, 0U) << name;
  }
  std::string error;
  conf::ClientTls lax;
  lax.verify = false;  // no CA store needed
  const auto cc = ClientContext::create(lax, error);
  ASSERT_TRUE(cc) << error;
  EXPECT_FALSE(cc->kernel_tls());
  TlsPair p;
  SslPtr ssl(cc->new_ssl(p.client_fd, "a.test", "127.0.0.1"));
  ASSERT_TRUE(ssl);
  EXPECT_EQ(SSL_get_options(ssl.get()) & SSL_OP_ENABLE_KTLS, 0U);
  EXPECT_EQ(SSL_CTX_get_options(SSL_get_SSL_CTX(ssl.get())) & SSL_OP_ENABLE_KTLS, 0U);
}

}  // namespace
}  // namespace ferry::worker::tls
