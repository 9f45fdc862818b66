// End-to-end tests of TLS origination (issue 22): an upstream whose servers require TLS. ferry
// verifies them against a CA (the right name accepted; a wrong name, an untrusted CA, an
// address the certificate does not list refused as connect failures, the next server tried),
// sends the name as SNI, and presents a client certificate when the server asks for one.
#include <sys/socket.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "event/syscall_util.h"
#include "tests/support/config_text.h"
#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/process.h"
#include "tests/support/sockets.h"
#include "tests/support/test_ca.h"
#include "tests/support/tls_tools.h"

namespace ferry::test {
namespace {

using std::chrono::seconds;

class TlsOriginationTest : public ::testing::Test {
 protected:
  // A proxy "plain" on `port` in front of the upstream "secure" of `servers` with `tls` as its
  // tls group's settings.
  std::string config(const std::vector<int>& servers, const std::string& tls) {
    std::vector<ServerSpec> list;
    for (const int s : servers) list.push_back(server_at(s));
    return config_text("worker_processes = 1;",
                       {{.name = "plain",
                         .listen = {loopback(port)},
                         .upstream = "secure",
                         .extra = "access_log = \"" + log + "\";"}},
                       {upstream_of(list, "tls = { " + tls + " };", "secure")});
  }
  // The tls settings that verify a server's certificate for backend.test against the CA.
  std::string verified() const {
    return "ca = \"" + ca.cert_path() + "\"; server_name = \"backend.test\"; ";
  }
  // Whether a plain client's bytes come back through ferry and the TLS server.
  bool served() {
    const event::UniqueFd fd(connect_to_port(port));
    return fd.valid() && echo_round_trip(fd.get(), "plaintext in, TLS out");
  }

  TempDir dir;
  std::string log = dir.path() + "/access.log";
  TestCa ca{dir.path()};
  int port = free_port();
};

TEST_F(TlsOriginationTest, TheRightNameIsAcceptedAndSentAsSni) {
  const Issued cert = ca.issue("backend", {"backend.test"});
  TlsEchoServer server(cert.cert_path, cert.key_path);
  FerryInstance ferry(
      config({server.port()}, "ca = \"" + ca.cert_path() + "\"; server_name = \"backend.test\";"));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  EXPECT_TRUE(served()) << ferry.log();
  EXPECT_EQ(server.handshakes(), 1);
  EXPECT_EQ(server.last_sni(), "backend.test");
}

TEST_F(TlsOriginationTest, AWrongNameAndAnUntrustedCaAreConnectFailures) {
  const Issued cert = ca.issue("backend", {"backend.test"});
  TestCa other(dir.path(), "other-ca");
  TlsEchoServer server(cert.cert_path, cert.key_path);
  {
    FerryInstance ferry(
        config({server.port()}, "ca = \"" + ca.cert_path() + "\"; server_name = \"wrong.test\";"));
    ASSERT_TRUE(ferry.start()) << ferry.log();
    EXPECT_FALSE(served());
    EXPECT_TRUE(ferry.wait_for_log("hostname mismatch")) << ferry.log();
  }
  {
    FerryInstance ferry(config(
        {server.port()}, "ca = \"" + other.cert_path() + "\"; server_name = \"backend.test\";"));
    ASSERT_TRUE(ferry.start()) << ferry.log();
    EXPECT_FALSE(served());
    EXPECT_TRUE(ferry.wait_for_log("TLS handshake")) << ferry.log();
  }
  EXPECT_TRUE(eventually([&] { return count_of(read_file(log), " connect_failed") == 2; }))
      << read_file(log);
  // verify = false: the same untrusted server is taken.
  FerryInstance lax(config({server.port()}, "verify = false;"));
  ASSERT_TRUE(lax.start()) << lax.log();
  EXPECT_TRUE(served()) << lax.log();
}

// A server written as an address: its certificate must list that address (an IP SAN); the
// next server is tried when it does not.
TEST_F(TlsOriginationTest, AnAddressIsVerifiedAsAnIpAndTheNextServerIsTried) {
  const Issued by_name = ca.issue("named", {"backend.test"});
  const Issued by_ip = ca.issue("addressed", {"backend.test"}, {"127.0.0.1"});
  TlsEchoServer wrong(by_name.cert_path, by_name.key_path);
  TlsEchoServer right(by_ip.cert_path, by_ip.key_path);
  FerryInstance ferry(config({wrong.port(), right.port()}, "ca = \"" + ca.cert_path() + "\";") +
                      "");
  ASSERT_TRUE(ferry.start()) << ferry.log();
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(served()) << i << ferry.log();
  EXPECT_EQ(right.handshakes(), 4);
  EXPECT_EQ(right.last_sni(), "") << "no SNI for an address";
  EXPECT_TRUE(ferry.wait_for_log("trying the next server")) << ferry.log();
}

TEST_F(TlsOriginationTest, AClientCertificateIsPresentedWhenConfigured) {
  const Issued cert = ca.issue("backend", {"backend.test"});
  const Issued client = ca.issue_client("ferry");
  TlsEchoServer server(cert.cert_path, cert.key_path, ca.cert_path());
  {
    FerryInstance without(config(
        {server.port()}, "ca = \"" + ca.cert_path() + "\"; server_name = \"backend.test\";"));
    ASSERT_TRUE(without.start()) << without.log();
    EXPECT_FALSE(served()) << "the server requires a client certificate";
  }
  FerryInstance with(config({server.port()}, "ca = \"" + ca.cert_path() +
                                                 "\"; server_name = \"backend.test\"; "
                                                 "certificate = \"" +
                                                 client.cert_path + "\"; key = \"" +
                                                 client.key_path + "\";"));
  ASSERT_TRUE(with.start()) << with.log();
  EXPECT_TRUE(served()) << with.log();
}

// send_proxy_protocol with TLS to the server: the header goes first, in clear, then the
// handshake (as HAProxy's send-proxy with ssl).
TEST_F(TlsOriginationTest, APROXYHeaderGoesInClearBeforeTheHandshake) {
  const Issued cert = ca.issue("backend", {"backend.test"});
  TlsEchoServer server(cert.cert_path, cert.key_path, "", /*proxy_header=*/true);
  std::string body =
      config({server.port()}, "ca = \"" + ca.cert_path() + "\"; server_name = \"backend.test\";");
  const std::string log_setting = "access_log = \"" + log + "\";";
  body.replace(body.find(log_setting), log_setting.size(),
               log_setting + " send_proxy_protocol = \"v1\";");
  FerryInstance ferry(body);
  ASSERT_TRUE(ferry.start()) << ferry.log();
  EXPECT_TRUE(served()) << ferry.log();
  EXPECT_TRUE(server.last_header().starts_with("PROXY TCP4 127.0.0.1 127.0.0.1 "))
      << server.last_header();
  EXPECT_EQ(server.handshakes(), 1);
}

// Upstream session reuse: the session a server gave is offered on the next connection to it
// (a TLS 1.3 ticket, read after the handshake; a TLS 1.2 ticket, at its end), and resumed; with
// session_reuse = false every connection is a full handshake.
TEST_F(TlsOriginationTest, TheNextConnectionToAServerResumesItsSession) {
  const Issued cert = ca.issue("backend", {"backend.test"});
  const std::string tls = verified();
  for (const char* protocols : {"TLSv1.3", "TLSv1.2"}) {
    SCOPED_TRACE(protocols);
    const std::string version = "protocols = \"" + std::string(protocols) + "\"; ";
    {
      TlsEchoServer server(cert.cert_path, cert.key_path);
      FerryInstance ferry(config({server.port()}, tls + version));
      ASSERT_TRUE(ferry.start()) << ferry.log();
      // Sequential: each session's echo comes back after the tickets before it, so the next
      // connection finds the session kept.
      for (int i = 0; i < 3; ++i) EXPECT_TRUE(served()) << i << ferry.log();
      EXPECT_TRUE(eventually([&] { return server.handshakes() == 3; }));
      EXPECT_EQ(server.resumed(), 2) << "the first handshake is a full one, the others resume";
    }
    {
      TlsEchoServer server(cert.cert_path, cert.key_path);
      FerryInstance ferry(config({server.port()}, tls + version + "session_reuse = false;"));
      ASSERT_TRUE(ferry.start()) << ferry.log();
      for (int i = 0; i < 3; ++i) EXPECT_TRUE(served()) << i << ferry.log();
      EXPECT_TRUE(eventually([&] { return server.handshakes() == 3; }));
      EXPECT_EQ(server.resumed(), 0);
    }
  }
}

// A server that refuses the session offered (its ticket keys changed) makes a full handshake,
// whose session replaces the refused one and is resumed next.
TEST_F(TlsOriginationTest, ASessionTheServerRefusesIsReplaced) {
  const Issued cert = ca.issue("backend", {"backend.test"});
  TlsEchoServer server(cert.cert_path, cert.key_path);
  FerryInstance ferry(config({server.port()}, verified()));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  // A first session (a full handshake), then the server's ticket keys change under its session.
  ASSERT_TRUE(served()) << ferry.log();
  ASSERT_TRUE(eventually([&] { return server.handshakes() == 1; }));
  ASSERT_TRUE(server.forget_sessions());
  EXPECT_TRUE(served()) << ferry.log();
  ASSERT_TRUE(eventually([&] { return server.handshakes() == 2; }));
  EXPECT_EQ(server.resumed(), 0) << "the session offered is refused";
  EXPECT_TRUE(served()) << ferry.log();
  EXPECT_TRUE(eventually([&] { return server.handshakes() == 3; }));
  EXPECT_EQ(server.resumed(), 1) << "the refused session's replacement is resumed";
}

// A session ended by the client's reset (ferry frees the server's SSL without a close_notify,
// which OpenSSL would take as a reason to mark its session unresumable) keeps its session
// resumable: the next connection resumes it.
TEST_F(TlsOriginationTest, ASessionEndedByAResetIsStillResumed) {
  const Issued cert = ca.issue("backend", {"backend.test"});
  TlsEchoServer server(cert.cert_path, cert.key_path);
  FerryInstance ferry(config({server.port()}, verified() + "protocols = \"TLSv1.2\";"));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  {
    const event::UniqueFd fd(connect_to_port(port));
    ASSERT_TRUE(fd.valid());
    ASSERT_TRUE(echo_round_trip(fd.get(), "then a reset"));
    const linger abort{.l_onoff = 1, .l_linger = 0};
    ASSERT_EQ(::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort), 0);
  }
  ASSERT_TRUE(eventually([&] { return read_file(log).find("client_reset") != std::string::npos; }))
      << ferry.log();
  EXPECT_TRUE(served()) << ferry.log();
  ASSERT_TRUE(eventually([&] { return server.handshakes() == 2; }));
  EXPECT_EQ(server.resumed(), 1) << ferry.log();
}

// kernel_tls = true where the kernel offers no kTLS (this machine's): a warning naming the
// upstream at start and at each reload, and TLS goes on in user space.
TEST_F(TlsOriginationTest, KernelTlsWithoutTheKernelsIsAWarningAndTlsGoesOn) {
  const Issued cert = ca.issue("backend", {"backend.test"});
  TlsEchoServer server(cert.cert_path, cert.key_path);
  FerryInstance ferry(config({server.port()}, "ca = \"" + ca.cert_path() +
                                                  "\"; server_name = \"backend.test\"; "
                                                  "kernel_tls = true;"));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  EXPECT_TRUE(served()) << ferry.log();
  if (ferry.log().find("kernel TLS (kTLS) is available") != std::string::npos) {
    GTEST_SKIP() << "this kernel offers kTLS";
  }
  const std::string warning =
      "upstream \"secure\": kernel_tls = true, but kernel TLS is not available";
  EXPECT_EQ(count_of(ferry.log(), warning), 1U) << ferry.log();
  const Finished reloaded = ferry.command("reload");
  ASSERT_EQ(reloaded.exit_code, 0) << reloaded.out << reloaded.err;
  EXPECT_TRUE(eventually([&] {
    ferry.drain_log();
    return count_of(ferry.log(), warning) == 2;
  })) << ferry.log();
  EXPECT_TRUE(served()) << ferry.log();
}

}  // namespace
}  // namespace ferry::test
