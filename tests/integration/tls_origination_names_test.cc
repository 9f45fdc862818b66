// End-to-end tests of the name TLS origination verifies and sends as SNI when the upstream has
// no server_name (review R8): a server added at run time by host name is verified by that name,
// an SRV target by the record's target name (as nginx's and HAProxy's operators expect), and the
// upstream's server_name, when set, still wins over both. Every backend certificate lists names
// only (no IP subjectAltName): verifying the address instead would refuse it.
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "event/syscall_util.h"
#include "tests/support/config_text.h"
#include "tests/support/dns_server.h"
#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/process.h"
#include "tests/support/sockets.h"
#include "tests/support/test_ca.h"
#include "tests/support/tls_tools.h"
#include "tests/support/unbound_server.h"

namespace ferry::test {
namespace {

constexpr const char* kService = "_app._tcp.svc.service.test";

// One worker, proxy "plain" on `port` to the upstream "secure" with `tls` (the CA's file
// added), whose servers are `servers` (the text of its list).
std::string names_config(int port, const std::string& ca, const std::string& tls,
                         const std::string& servers) {
  std::string text = config_text(
      "worker_processes = 1;", {{.listen = {loopback(port)}, .upstream = "secure", .extra = ""}},
      {upstream_of({server_at(free_port())},
                   "resolve_interval = \"1s\"; tls = { ca = \"" + ca + "\"; " + tls + " };",
                   "secure")});
  const auto at = text.find("servers = (");
  const auto end = text.find(");", at);
  if (at == std::string::npos || end == std::string::npos) return text;
  return text.replace(at, end + 2 - at, "servers = ( " + servers + " );");
}

// Whether a plain client's bytes come back through ferry and the TLS server.
bool served(int port) {
  const event::UniqueFd fd(connect_to_port(port));
  return fd.valid() && echo_round_trip(fd.get(), "plaintext in, TLS out");
}

// A server added with `ctl add server secure/localhost:PORT`, under both /etc/hosts layouts
// (Debian's gives ::1 first, where nothing listens: that address fails, 127.0.0.1 serves).
class RuntimeNames : public ::testing::TestWithParam<HostsLayout> {
 protected:
  // Ferry in the sandbox, its one configured server down (only an added one can serve); then
  // `ctl add server secure/HOST:PORT` of the backend, which must be accepted.
  void start_and_add(const std::string& host) {
    ferry_ = std::make_unique<FerryInstance>(names_config(
        port, ca.cert_path(), "",
        "{ address = \"127.0.0.1:" + std::to_string(free_port()) + "\"; down = true; }"));
    ferry_->set_launcher(resolv_sandbox(dns_, GetParam(), ferry_->dir().path()));
    ASSERT_TRUE(ferry_->start()) << ferry_->log();
    const Finished added =
        ferry_->ctl("add server secure/" + host + ":" + std::to_string(backend.port()));
    ASSERT_EQ(added.exit_code, 0) << added.out << added.err;
  }

  TempDir dir;
  TestCa ca{dir.path()};
  int port = free_port();
  const Issued cert = ca.issue("localhost", {"localhost"});
  TlsEchoServer backend{cert.cert_path, cert.key_path};
  DnsServer dns_;
  std::unique_ptr<FerryInstance> ferry_;
};

TEST_P(RuntimeNames, AServerAddedByNameIsVerifiedByThatName) {
  ASSERT_NO_FATAL_FAILURE(start_and_add("localhost"));
  EXPECT_TRUE(eventually([&] { return served(port); })) << ferry_->log();
  EXPECT_GE(backend.handshakes(), 1);
  EXPECT_EQ(backend.last_sni(), "localhost");
  EXPECT_EQ(ferry_->log().find("hostname mismatch"), std::string::npos) << ferry_->log();
  EXPECT_EQ(ferry_->log().find("IP address mismatch"), std::string::npos) << ferry_->log();
}

// The same server added by its address is verified as that address: its certificate, which
// lists names only, is refused.
TEST_P(RuntimeNames, AServerAddedByAddressIsStillVerifiedAsAnIp) {
  ASSERT_NO_FATAL_FAILURE(start_and_add("127.0.0.1"));
  EXPECT_FALSE(served(port));
  EXPECT_TRUE(ferry_->wait_for_log("IP address mismatch")) << ferry_->log();
}

INSTANTIATE_TEST_SUITE_P(TlsOriginationNamesTest, RuntimeNames,
                         ::testing::Values(HostsLayout::ipv4_only, HostsLayout::ipv6_first),
                         [](const auto& info) {
                           return info.param == HostsLayout::ipv6_first ? "Ipv6First" : "Ipv4Only";
                         });

// Servers of an SRV service: the record's target is never the verified name (forged DNS could
// name any host with a valid certificate); without the upstream's server_name the address is
// verified, which a name-only certificate fails.
class SrvNames : public ::testing::Test {
 protected:
  // Unbound serving the service's one record to `target` (on 127.0.0.1 at the backend's port),
  // ferry on it with the upstream's `tls` settings.
  void start(int backend_port, const std::string& target, const std::string& tls) {
    try {
      unbound_ = std::make_unique<UnboundServer>(
          "service.test",
          std::vector<std::string>{std::string(kService) + ". 1 IN SRV 10 1 " +
                                       std::to_string(backend_port) + " " + target + ".",
                                   target + ". 1 IN A 127.0.0.1"});
    } catch (const std::exception& e) {
      FAIL() << e.what();
    }
    ferry_ = std::make_unique<FerryInstance>(names_config(
        port, ca.cert_path(), tls, "{ service = \"" + std::string(kService) + "\"; }"));
    ferry_->set_launcher(
        resolv_sandbox(unbound_->resolv_conf(), HostsLayout::ipv4_only, ferry_->dir().path()));
    ASSERT_TRUE(ferry_->start()) << ferry_->log();
  }

  TempDir dir;
  TestCa ca{dir.path()};
  int port = free_port();
  std::unique_ptr<UnboundServer> unbound_;
  std::unique_ptr<FerryInstance> ferry_;
};

TEST_F(SrvNames, ATargetsNameIsNotTrusted) {
  const Issued cert = ca.issue("a", {"a.service.test"});
  TlsEchoServer backend(cert.cert_path, cert.key_path);
  ASSERT_NO_FATAL_FAILURE(start(backend.port(), "a.service.test", ""));
  EXPECT_FALSE(served(port));
  EXPECT_TRUE(ferry_->wait_for_log("127.0.0.1")) << ferry_->log();
  EXPECT_EQ(backend.last_sni(), "");
}

TEST_F(SrvNames, TheUpstreamsServerNameIsVerified) {
  const Issued cert = ca.issue("a", {"a.service.test"});
  TlsEchoServer backend(cert.cert_path, cert.key_path);
  ASSERT_NO_FATAL_FAILURE(
      start(backend.port(), "a.service.test", "server_name = \"a.service.test\";"));
  EXPECT_TRUE(eventually([&] { return served(port); })) << ferry_->log();
  EXPECT_EQ(backend.last_sni(), "a.service.test");
}

TEST_F(SrvNames, TheUpstreamsServerNameWinsOverTheTarget) {
  const Issued cert = ca.issue("a", {"a.service.test"});
  TlsEchoServer backend(cert.cert_path, cert.key_path);
  ASSERT_NO_FATAL_FAILURE(start(backend.port(), "a.service.test", "server_name = \"other.test\";"));
  EXPECT_FALSE(served(port));
  EXPECT_TRUE(ferry_->wait_for_log("expected \"other.test\"")) << ferry_->log();
}

}  // namespace
}  // namespace ferry::test
