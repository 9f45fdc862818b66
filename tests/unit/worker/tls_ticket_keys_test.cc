// Tests of worker/tls/ticket_keys: keys derived per period from the master's secret, and
// session resumption between two ServerContexts built apart from the same keys (two workers),
// refused with other keys and for a ticket older than the previous period.
#include "worker/tls/ticket_keys.h"

#include <fstream>

#include <gtest/gtest.h>

#include "tests/support/process.h"
#include "tests/support/test_ca.h"
#include "tests/unit/worker/tls_pair.h"
#include "worker/tls/server_context.h"

namespace ferry::worker::tls {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::system_clock;

std::array<unsigned char, TicketKeys::kSecretSize> secret(unsigned char fill) {
  std::array<unsigned char, TicketKeys::kSecretSize> s{};
  s.fill(fill);
  return s;
}

bool same(const TicketKey& a, const TicketKey& b) {
  return a.name == b.name && a.aes == b.aes && a.hmac == b.hmac;
}

TEST(TicketKeysTest, KeysFollowTheSecretAndThePeriod) {
  const auto a = TicketKeys::from_secret(secret(1));
  const auto b = TicketKeys::from_secret(secret(1));
  const auto c = TicketKeys::from_secret(secret(2));
  TicketKey ka, kb, kc, next;
  ASSERT_TRUE(a->key(7, ka));
  ASSERT_TRUE(b->key(7, kb));
  ASSERT_TRUE(c->key(7, kc));
  ASSERT_TRUE(a->key(8, next));
  EXPECT_TRUE(same(ka, kb));
  EXPECT_FALSE(same(ka, kc));
  EXPECT_NE(ka.name, next.name);
  EXPECT_NE(ka.aes, next.aes);
  EXPECT_NE(ka.name, kc.name);
  // Asked again (from the cache, then after it moved on): the same.
  TicketKey again;
  ASSERT_TRUE(a->key(9, again));
  ASSERT_TRUE(a->key(7, again));
  EXPECT_TRUE(same(again, ka));

  const auto r1 = TicketKeys::create();
  const auto r2 = TicketKeys::create();
  ASSERT_TRUE(r1 && r2);
  ASSERT_TRUE(r1->key(1, ka));
  ASSERT_TRUE(r2->key(1, kb));
  EXPECT_FALSE(same(ka, kb)) << "each master draws its own secret";
}

TEST(TicketKeysTest, ThePeriodIsTheRealtimeClockOverTheLifetime) {
  const auto keys = TicketKeys::from_secret(secret(1));
  keys->set_now_for_test(system_clock::time_point(hours(3) + milliseconds(1)));
  EXPECT_EQ(keys->period(hours(1)), 3);
  EXPECT_EQ(keys->period(milliseconds(1000)), 3 * 3600 + 0);
  keys->set_now_for_test(system_clock::time_point(hours(4) - milliseconds(1)));
  EXPECT_EQ(keys->period(hours(1)), 3);
  // Unhooked: the real clock.
  const auto real = TicketKeys::from_secret(secret(1));
  const auto now = std::chrono::duration_cast<hours>(system_clock::now().time_since_epoch());
  EXPECT_NEAR(static_cast<double>(real->period(hours(1))), static_cast<double>(now.count()), 1);
}

class TicketResumptionTest : public ::testing::TestWithParam<int> {
 protected:
  TicketResumptionTest() : ca_(dir_.path()) {
    const test::Issued leaf = ca_.issue("leaf", {"a.test"});
    settings_.certificates = {{leaf.cert_path, leaf.key_path}};
    client_ = client_ctx(GetParam(), GetParam(), ca_.cert_path());
    // The client keeps its sessions itself (SSL_get1_session).
    SSL_CTX_set_session_cache_mode(client_.get(), SSL_SESS_CACHE_CLIENT);
  }

  std::unique_ptr<ServerContext> worker(std::shared_ptr<const TicketKeys> keys) {
    std::string error;
    auto sc = ServerContext::create(settings_, std::move(keys), error);
    EXPECT_TRUE(sc) << error;
    return sc;
  }
  // A full handshake with `sc`: the session the client got a ticket for.
  SSL_SESSION* first_session(const ServerContext& sc, const std::string& sni = "a.test") {
    TlsPair p;
    p.client = client_ssl(client_.get(), p.client_fd, sni);
    p.server.reset(sc.new_ssl(p.server_fd));
    EXPECT_TRUE(p.handshake().ok());
    EXPECT_TRUE(p.server_says_hello());
    EXPECT_FALSE(SSL_session_reused(p.client.get()));
    // Closed cleanly: OpenSSL makes the session of a connection freed without it unresumable.
    SSL_shutdown(p.client.get());
    return SSL_get1_session(p.client.get());
  }
  // Whether `session` resumes at `sc`.
  bool resumes(const ServerContext& sc, SSL_SESSION* session, const std::string& sni = "a.test") {
    TlsPair p;
    p.client = client_ssl(client_.get(), p.client_fd, sni);
    SSL_set_session(p.client.get(), session);
    p.server.reset(sc.new_ssl(p.server_fd));
    const Outcome o = p.handshake();
    EXPECT_TRUE(o.ok()) << o.client << " / " << o.server;
    return SSL_session_reused(p.client.get()) == 1 && SSL_session_reused(p.server.get()) == 1;
  }

  test::TempDir dir_;
  test::TestCa ca_;
  conf::ServerTls settings_;
  SslCtxPtr client_;
};

TEST_P(TicketResumptionTest, AnotherWorkerWithTheSameKeysResumesOneWithOtherKeysDoesNot) {
  const std::shared_ptr<const TicketKeys> keys = TicketKeys::create();
  const auto one = worker(keys);
  const auto two = worker(keys);
  const auto stranger = worker(TicketKeys::create());
  SSL_SESSION* session = first_session(*one);
  ASSERT_NE(session, nullptr);
  EXPECT_TRUE(resumes(*two, session));
  EXPECT_FALSE(resumes(*stranger, session));
  SSL_SESSION_free(session);
}

// A reload that puts another CA in the same client_ca file: tickets issued while the old CA
// was trusted do not resume (a resumption would skip the client certificate's check).
TEST_P(TicketResumptionTest, ATicketDoesNotOutliveTheClientCaItWasIssuedUnder) {
  const std::string path = dir_.path() + "/clients.pem";
  const auto copy = [&](const std::string& from) {
    std::ifstream in(from, std::ios::binary);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << in.rdbuf();
  };
  copy(ca_.cert_path());
  settings_.client_ca = path;
  settings_.verify_client = conf::VerifyClient::optional;  // the client sends none
  const std::shared_ptr<const TicketKeys> keys = TicketKeys::create();
  const auto before = worker(keys);
  const auto same = worker(keys);
  SSL_SESSION* session = first_session(*before);
  ASSERT_NE(session, nullptr);
  EXPECT_TRUE(resumes(*same, session));
  test::TestCa other(dir_.path(), "other-ca");
  copy(other.cert_path());
  const auto after = worker(keys);
  EXPECT_FALSE(resumes(*after, session));
  SSL_SESSION_free(session);
}

TEST_P(TicketResumptionTest, ATicketOfThePreviousPeriodResumesAnOlderOneDoesNot) {
  const auto keys = TicketKeys::from_secret(secret(9));
  const milliseconds lifetime = settings_.session_ticket_lifetime;
  const system_clock::time_point start(lifetime * 1000 + milliseconds(5));
  keys->set_now_for_test(start);
  const auto sc = worker(keys);
  for (const auto& [later, resumed] :
       std::vector<std::pair<int, bool>>{{0, true}, {1, true}, {2, false}}) {
    SSL_SESSION* session = first_session(*sc);
    keys->set_now_for_test(start + lifetime * later);
    EXPECT_EQ(resumes(*sc, session), resumed) << later << " periods later";
    keys->set_now_for_test(start);
    SSL_SESSION_free(session);
  }
}

// The SNI moves the connection to another certificate's context: its ticket still resumes.
TEST_P(TicketResumptionTest, ASessionOfAnotherCertificatesNameResumesToo) {
  const test::Issued other = ca_.issue("other", {"*.other.test"}, {}, test::KeyType::rsa);
  settings_.certificates.push_back({other.cert_path, other.key_path});
  const std::shared_ptr<const TicketKeys> keys = TicketKeys::create();
  const auto one = worker(keys);
  const auto two = worker(keys);
  SSL_SESSION* session = first_session(*one, "x.other.test");
  ASSERT_NE(session, nullptr);
  EXPECT_TRUE(resumes(*two, session, "x.other.test"));
  SSL_SESSION_free(session);
}

TEST_P(TicketResumptionTest, WithoutTicketsNothingResumes) {
  settings_.session_tickets = false;
  const auto sc = worker(TicketKeys::create());
  SSL_SESSION* session = first_session(*sc);
  if (session != nullptr) {
    EXPECT_FALSE(resumes(*sc, session));
    SSL_SESSION_free(session);
  }
}

INSTANTIATE_TEST_SUITE_P(Versions, TicketResumptionTest,
                         ::testing::Values(TLS1_2_VERSION, TLS1_3_VERSION), [](const auto& info) {
                           return info.param == TLS1_3_VERSION ? "TLSv13" : "TLSv12";
                         });

}  // namespace
}  // namespace ferry::worker::tls
