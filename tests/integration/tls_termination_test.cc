// End-to-end tests of TLS termination (issue 22): ferry holds the certificates and relays the
// plaintext to a plain backend. A test CA makes ECDSA and RSA certificates; real clients talk
// through (openssl s_client, an in-process OpenSSL client); the certificate follows the SNI and
// the client's signature algorithms; mTLS accepts and refuses; resumption works across workers;
// bad handshakes close alone; a reload swaps certificates without a failed handshake.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "event/syscall_util.h"
#include "tests/support/backend_process.h"
#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/process.h"
#include "tests/support/sockets.h"
#include "tests/support/test_ca.h"
#include "tests/support/tls_tools.h"

namespace ferry::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

class TlsTerminationTest : public ::testing::Test {
 protected:
  TempDir dir;
  std::string log = dir.path() + "/access.log";
  TestCa ca{dir.path()};
  EchoServer backend;
  int port = free_port();
};

TEST_F(TlsTerminationTest, TheCertificateFollowsTheNameAndTheClientsAlgorithms) {
  const Issued a_ec = ca.issue("a-ec", {"a.test"});
  const Issued a_rsa = ca.issue("a-rsa", {"a.test"}, {}, KeyType::rsa);
  const Issued b = ca.issue("b", {"*.b.test"});
  FerryInstance ferry(terminating_config(port, backend.port(), {a_ec, a_rsa, b}, log));
  ASSERT_TRUE(ferry.start()) << ferry.log();

  TlsClient ec(port, options([&](TlsClientOptions& o) {
                 o.sni = "a.test";
                 o.ca = ca.cert_path();
               }));
  ASSERT_TRUE(ec.connected()) << ec.error();
  EXPECT_EQ(ec.peer_key_type(), "EC");
  EXPECT_EQ(ec.version(), "TLSv1.3");
  EXPECT_TRUE(ec.round_trip("through termination"));
  // A client that only signs with RSA gets the RSA certificate of the same name.
  TlsClient rsa(port, options([&](TlsClientOptions& o) {
                  o.sni = "a.test";
                  o.ca = ca.cert_path();
                  o.sigalgs = "RSA-PSS+SHA256";
                }));
  ASSERT_TRUE(rsa.connected()) << rsa.error();
  EXPECT_EQ(rsa.peer_key_type(), "RSA");
  TlsClient wild(port, options([&](TlsClientOptions& o) {
                   o.sni = "x.b.test";
                   o.ca = ca.cert_path();
                 }));
  ASSERT_TRUE(wild.connected()) << wild.error();
  EXPECT_NE(wild.peer_subject().find("b.test"), std::string::npos) << wild.peer_subject();
  // No SNI, or a name no certificate has: the first certificate.
  TlsClient none(port, options([&](TlsClientOptions& o) {
                   o.ca = ca.cert_path();
                   o.verify_name = "a.test";
                 }));
  ASSERT_TRUE(none.connected()) << none.error();
  EXPECT_NE(none.peer_subject().find("a.test"), std::string::npos);
  TlsClient tls12(port, options([&](TlsClientOptions& o) {
                    o.sni = "a.test";
                    o.ca = ca.cert_path();
                    o.max_version = TLS1_2_VERSION;
                  }));
  ASSERT_TRUE(tls12.connected()) << tls12.error();
  EXPECT_EQ(tls12.version(), "TLSv1.2");
  EXPECT_TRUE(tls12.round_trip(std::string(100'000, 'x')));

  // openssl s_client: 1.2 and 1.3, the chain verified against the test CA.
  for (const std::string v : {"-tls1_2", "-tls1_3"}) {
    const Finished f =
        s_client(port, "x.b.test", {}, {v, "-CAfile", ca.cert_path(), "-verify_return_error"});
    EXPECT_NE(f.out.find("Verify return code: 0 (ok)"), std::string::npos) << v << f.out << f.err;
  }
  // A client that would take TLS 1.1 (its security level lowered to allow it) is refused.
  const Finished old = s_client(port, "a.test", {}, {"-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"});
  EXPECT_NE(old.out.find("Cipher is (NONE)"), std::string::npos) << old.out << old.err;
  const std::string logged = read_file(log);
  EXPECT_NE(logged.find(" tls=TLSv1.3"), std::string::npos) << logged;
}

TEST_F(TlsTerminationTest, AlpnIsAgreedOrTheHandshakeFails) {
  const Issued a = ca.issue("a", {"a.test"});
  FerryInstance ferry(
      terminating_config(port, backend.port(), {a}, log, "alpn = [\"h2\", \"http/1.1\"];"));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  TlsClient both(port, options([&](TlsClientOptions& o) {
                   o.sni = "a.test";
                   o.alpn = {"http/1.1", "h2"};
                 }));
  ASSERT_TRUE(both.connected()) << both.error();
  EXPECT_EQ(both.alpn(), "h2");  // the server's preference
  const Finished f = s_client(port, "a.test", {"http/1.1"});
  EXPECT_NE(f.out.find("ALPN protocol: http/1.1"), std::string::npos) << f.out;
  TlsClient other(port, options([&](TlsClientOptions& o) {
                    o.sni = "a.test";
                    o.alpn = {"imap"};
                  }));
  EXPECT_FALSE(other.connected());
}

TEST_F(TlsTerminationTest, ClientCertificatesAreVerifiedAndTheSubjectIsLogged) {
  const Issued a = ca.issue("a", {"a.test"});
  const Issued client = ca.issue_client("client-1");
  TestCa other(dir.path(), "other-ca");
  const Issued stranger = other.issue_client("stranger");
  FerryInstance ferry(
      terminating_config(port, backend.port(), {a}, log,
                         "client_ca = \"" + ca.cert_path() + "\"; verify_client = \"on\";"));
  ASSERT_TRUE(ferry.start()) << ferry.log();

  {
    TlsClient good(port, options([&](TlsClientOptions& o) {
                     o.sni = "a.test";
                     o.cert = client.cert_path;
                     o.key = client.key_path;
                   }));
    ASSERT_TRUE(good.connected()) << good.error();
    EXPECT_TRUE(good.round_trip("mutual"));
  }
  // TLS 1.3: the client's handshake ends before the server's verdict, which comes as an alert.
  TlsClient none(port, options([&](TlsClientOptions& o) { o.sni = "a.test"; }));
  EXPECT_TRUE(!none.connected() || !none.round_trip("no certificate")) << "refused";
  TlsClient untrusted(port, options([&](TlsClientOptions& o) {
                        o.sni = "a.test";
                        o.cert = stranger.cert_path;
                        o.key = stranger.key_path;
                      }));
  EXPECT_TRUE(!untrusted.connected() || !untrusted.round_trip("stranger")) << "refused";
  const Finished with =
      s_client(port, "a.test", {}, {"-cert", client.cert_path, "-key", client.key_path});
  EXPECT_NE(with.out.find("Verify return code"), std::string::npos) << with.out << with.err;

  EXPECT_TRUE(eventually([&] { return count_of(read_file(log), "\n") >= 4; }));
  const std::string logged = read_file(log);
  EXPECT_NE(logged.find("subject=\"CN=client-1,O=ferry tests\""), std::string::npos) << logged;
  EXPECT_GE(count_of(logged, " tls_handshake_failed"), 2U) << logged;
  EXPECT_EQ(backend.spoke(), 1) << "only the verified client that sent bytes reached the server";
}

TEST_F(TlsTerminationTest, SessionsResumeAcrossWorkersWithSharedTicketKeys) {
  const Issued a = ca.issue("a", {"a.test"});
  FerryInstance ferry(terminating_config(port, backend.port(), {a}, log, "", 2));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  for (const int version : {TLS1_2_VERSION, 0}) {
    TlsClient first(port, options([&](TlsClientOptions& o) {
                      o.sni = "a.test";
                      o.max_version = version;
                    }));
    ASSERT_TRUE(first.connected()) << first.error();
    ASSERT_TRUE(first.round_trip("first"));
    SSL_SESSION* session = first.take_session();
    ASSERT_NE(session, nullptr);
    // Many connections: with two workers, some land on the one that did not issue the ticket.
    int resumed = 0;
    for (int i = 0; i < 20; ++i) {
      TlsClient again(port, options([&](TlsClientOptions& o) {
                        o.sni = "a.test";
                        o.max_version = version;
                        o.resume = session;
                      }));
      ASSERT_TRUE(again.connected()) << again.error();
      resumed += again.resumed() ? 1 : 0;
    }
    SSL_SESSION_free(session);
    EXPECT_EQ(resumed, 20) << "version " << version;
  }
}

// The session's end reaches a TLS client as a close_notify, also when the client finished
// first (its FIN passed on, then the server's: the close sent no close_notify before).
TEST_F(TlsTerminationTest, TheEndReachesTheClientAsACloseNotify) {
  const Issued a = ca.issue("a", {"a.test"});
  FerryInstance ferry(terminating_config(port, backend.port(), {a}, log));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  TlsClient client(port, options([&](TlsClientOptions& o) { o.sni = "a.test"; }));
  ASSERT_TRUE(client.round_trip("request"));
  client.shutdown_write();
  EXPECT_TRUE(client.ends_with_close_notify()) << client.error();
  EXPECT_TRUE(eventually([&] { return count_of(read_file(log), " closed tls=") == 1; }))
      << read_file(log);
}

// A session ferry ends itself once the handshake is done (here no server can be connected)
// ends with a close_notify too: the client can tell it from a truncation.
TEST_F(TlsTerminationTest, ASessionEndedByFerryEndsWithACloseNotify) {
  const Issued a = ca.issue("a", {"a.test"});
  FerryInstance ferry(terminating_config(port, free_port(), {a}, log));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  TlsClient client(port, options([&](TlsClientOptions& o) { o.sni = "a.test"; }));
  ASSERT_TRUE(client.connected()) << client.error();
  EXPECT_TRUE(client.ends_with_close_notify()) << client.error();
  EXPECT_TRUE(eventually([&] { return count_of(read_file(log), " connect_failed tls=") == 1; }))
      << read_file(log);
}

// A server's reset stays a truncation for a terminated client: no close_notify before ferry's
// reset of the client, which would make a cut stream look complete.
TEST_F(TlsTerminationTest, AServersResetReachesTheClientWithoutACloseNotify) {
  const Issued a = ca.issue("a", {"a.test"});
  BackendProcess resetting(BackendOptions{.reset_on = '!'});
  FerryInstance ferry(terminating_config(port, resetting.port(), {a}, log));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  TlsClient client(port, options([&](TlsClientOptions& o) { o.sni = "a.test"; }));
  ASSERT_TRUE(client.round_trip("first part")) << client.error();
  ASSERT_TRUE(client.write("!"));
  EXPECT_FALSE(client.ends_with_close_notify()) << "the server's reset came as a clean end";
  EXPECT_TRUE(eventually([&] { return count_of(read_file(log), " upstream_reset tls=") == 1; }))
      << read_file(log);
}

// A client on `fd` (the test's OpenSSL writes into memory, the test sends) whose handshake's
// last flight and a close_notify go out together, corked: they leave with whatever the caller
// does next (a close(2), or a shutdown(SHUT_WR)), so ferry sees the end with the handshake.
// Returns its SSL (null on failure), the socket still corked.
SSL* corked_handshake_then_close_notify(SSL_CTX* ctx, int fd) {
  if (::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) return nullptr;
  SSL* ssl = SSL_new(ctx);
  BIO* out = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, BIO_new_socket(fd, BIO_NOCLOSE), out);
  SSL_set_tlsext_host_name(ssl, "a.test");
  SSL_set_connect_state(ssl);
  const auto take = [&] {
    char* bytes = nullptr;
    const long n = BIO_get_mem_data(out, &bytes);
    std::string taken(bytes, static_cast<std::size_t>(std::max(n, 0L)));
    (void)BIO_reset(out);
    return taken;
  };
  for (int i = 0; i < 200; ++i) {
    const int r = SSL_do_handshake(ssl);
    if (r == 1) {
      SSL_shutdown(ssl);
      const int on = 1;
      if (::setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on) != 0 || !send_all(fd, take())) {
        break;
      }
      return ssl;
    }
    if (SSL_get_error(ssl, r) != SSL_ERROR_WANT_READ || !send_all(fd, take())) break;
    pollfd p{fd, POLLIN, 0};
    ::poll(&p, 1, 50);
  }
  SSL_free(ssl);
  return nullptr;
}

// A client gone with its handshake (a TLS health check, a probe: its Finished, a close_notify
// and a close(2) — the session tickets then meet a reset) gets no server connection: there is
// nothing to send and nobody to answer. One that only half-closes gets its server, whose words
// it may be waiting for: the backend sees its connection.
TEST_F(TlsTerminationTest, AClientGoneWithItsHandshakeGetsNoServerConnection) {
  const Issued a = ca.issue("a", {"a.test"});
  FerryInstance ferry(terminating_config(port, backend.port(), {a}, log));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  ASSERT_NE(ctx, nullptr);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);

  for (int i = 0; i < 3; ++i) {
    event::UniqueFd fd(connect_to_port(port));
    ASSERT_TRUE(fd.valid());
    SSL* ssl = corked_handshake_then_close_notify(ctx, fd.get());
    ASSERT_NE(ssl, nullptr);
    fd.reset();  // the corked bytes and the FIN leave together
    SSL_free(ssl);
  }
  ASSERT_TRUE(eventually([&] { return count_of(read_file(log), " tls=") == 3; })) << read_file(log);
  EXPECT_EQ(count_of(read_file(log), " - 0 0 "), 3U) << "no server reached\n" << read_file(log);
  EXPECT_EQ(backend.accepted(), 0) << read_file(log);

  // A half-close: the server is connected, and its end comes back as a close_notify.
  const event::UniqueFd fd(connect_to_port(port));
  ASSERT_TRUE(fd.valid());
  SSL* ssl = corked_handshake_then_close_notify(ctx, fd.get());
  ASSERT_NE(ssl, nullptr);
  ASSERT_EQ(::shutdown(fd.get(), SHUT_WR), 0);
  EXPECT_TRUE(eventually([&] { return backend.accepted() == 1; })) << read_file(log);
  EXPECT_TRUE(closed_by_peer(fd.get(), seconds(5)));
  SSL_free(ssl);
  SSL_CTX_free(ctx);
}

// The same client over a network: its reset comes a round trip after the session tickets, once
// the server is being connected (here one that never answers: the connect would take
// connect_timeout, 5 s). The connect is abandoned when the reset comes.
TEST_F(TlsTerminationTest, AClientGoneWhileItsServerIsConnectedEndsThen) {
  const Issued a = ca.issue("a", {"a.test"});
  const BlackHole hole;
  ASSERT_NE(hole.port(), 0);
  FerryInstance ferry(terminating_config(port, hole.port(), {a}, log));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  ASSERT_NE(ctx, nullptr);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  event::UniqueFd fd(connect_to_port(port));
  ASSERT_TRUE(fd.valid());
  SSL* ssl = corked_handshake_then_close_notify(ctx, fd.get());
  ASSERT_NE(ssl, nullptr);
  ASSERT_EQ(::shutdown(fd.get(), SHUT_WR), 0);  // a half-close: ferry connects the server
  ASSERT_TRUE(eventually([&] {
    return ferry.ctl("show sessions").out.find("connecting") != std::string::npos;
  })) << ferry.log();
  fd.reset();  // the tickets unread: a reset
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  EXPECT_TRUE(
      eventually([&] { return count_of(read_file(log), " closed tls=") == 1; }, milliseconds(2500)))
      << read_file(log);
}

// Bad handshakes beside a good session: each closes alone, the good one keeps streaming.
TEST_F(TlsTerminationTest, BadHandshakesDoNotDisturbAStreamingSession) {
  const Issued a = ca.issue("a", {"a.test"});
  FerryInstance ferry(
      terminating_config(port, backend.port(), {a}, log, "handshake_timeout = \"500ms\";"));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  TlsClient good(port, options([&](TlsClientOptions& o) {
                   o.sni = "a.test";
                   o.ca = ca.cert_path();
                 }));
  ASSERT_TRUE(good.connected()) << good.error();
  std::atomic<bool> stop{false}, broken{false};
  std::atomic<int> rounds{0};
  std::thread streaming([&] {
    while (!stop && !broken) {
      if (!good.round_trip(std::string(8192, 'g'))) broken = true;
      ++rounds;
    }
  });
  const std::string hello = client_hello_bytes("a.test");
  for (std::size_t cut = 1; cut < hello.size(); cut += 7) {
    const event::UniqueFd fd(connect_to_port(port));
    ASSERT_TRUE(send_all(fd.get(), hello.substr(0, cut)));
    ::shutdown(fd.get(), SHUT_WR);
    EXPECT_TRUE(closed_by_peer(fd.get(), seconds(5))) << "cut at " << cut;
  }
  {
    const event::UniqueFd garbage(connect_to_port(port));
    send_all(garbage.get(), std::string("\x16\x03\x01\x02\x00", 5) + std::string(512, '\xff'));
    EXPECT_TRUE(closed_by_peer(garbage.get(), seconds(5)));
    const event::UniqueFd stalled(connect_to_port(port));
    ASSERT_TRUE(send_all(stalled.get(), hello.substr(0, hello.size() / 2)));
    EXPECT_TRUE(closed_by_peer(stalled.get(), seconds(5))) << "handshake_timeout";
  }
  TlsClient renegotiating(port, options([&](TlsClientOptions& o) {
                            o.sni = "a.test";
                            o.max_version = TLS1_2_VERSION;
                          }));
  ASSERT_TRUE(renegotiating.connected()) << renegotiating.error();
  EXPECT_FALSE(renegotiating.renegotiate()) << "renegotiation is refused";
  const int before = rounds.load();
  EXPECT_TRUE(eventually([&] { return rounds.load() > before + 10 || broken; }));
  stop = true;
  streaming.join();
  EXPECT_FALSE(broken) << good.error();
  EXPECT_GE(count_of(read_file(log), " tls_handshake_timeout"), 1U) << read_file(log);
}

// 20 reloads that swap the certificate while clients handshake without pause: not one fails,
// each new handshake gets one of the two certificates, and an established session goes on
// (it drains in its worker: OpenSSL's state cannot move).
TEST_F(TlsTerminationTest, ReloadsSwapCertificatesWithoutAFailedHandshake) {
  const Issued first = ca.issue("first", {"a.test"});
  LeafSpec second_spec;
  second_spec.dns = {"a.test"};
  second_spec.common_name = "second";
  const Issued second = ca.issue("second", second_spec);
  FerryInstance ferry(terminating_config(port, backend.port(), {first}, log, "", 2));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  TlsClient established(port, options([&](TlsClientOptions& o) {
                          o.sni = "a.test";
                          o.ca = ca.cert_path();
                        }));
  ASSERT_TRUE(established.round_trip("before"));

  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0}, saw_second{0};
  std::string first_failure;
  std::thread clients([&] {
    while (!stop) {
      TlsClient c(port, options([&](TlsClientOptions& o) {
                    o.sni = "a.test";
                    o.ca = ca.cert_path();
                  }));
      if (c.connected() && c.round_trip("x")) {
        ++ok;
        if (c.peer_subject().find("second") != std::string::npos) ++saw_second;
      } else {
        if (failed++ == 0) first_failure = c.error();
      }
    }
  });
  for (int i = 0; i < 20; ++i) {
    ferry.rewrite(
        terminating_config(port, backend.port(), {i % 2 == 0 ? second : first}, log, "", 2));
    const Finished r = ferry.command("reload");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const int before = ok.load();
    ASSERT_TRUE(eventually([&] { return ok.load() > before + 2; })) << "reload " << i;
  }
  stop = true;
  clients.join();
  EXPECT_EQ(failed.load(), 0) << first_failure;
  EXPECT_GT(saw_second.load(), 0);
  EXPECT_GT(ok.load(), 40);
  EXPECT_TRUE(established.round_trip("after 20 reloads"));
}

}  // namespace
}  // namespace ferry::test
