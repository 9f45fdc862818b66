// Real TLS clients and scanners against a terminating proxy (issue 22): curl to a plain HTTP
// backend, redis-cli --tls to a plain redis-server, and sslscan / testssl.sh on the listener.
#include <unistd.h>

#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/process.h"
#include "tests/support/sockets.h"
#include "tests/support/test_ca.h"
#include "tests/support/tls_tools.h"

namespace ferry::test {
namespace {

using std::chrono::seconds;

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class TlsClientsTest : public ::testing::Test {
 protected:
  TempDir dir;
  std::string log = dir.path() + "/access.log";
  TestCa ca{dir.path()};
  int port = free_port();
};

TEST_F(TlsClientsTest, CurlFetchesAFileFromAPlainHttpBackend) {
  const std::string content = "served in plaintext, fetched over TLS\n";
  const std::string www = dir.path() + "/www";
  dir.write("www/file.txt", content);
  const int http_port = free_port();
  Process http({"python3", "-m", "http.server", std::to_string(http_port), "--bind", "127.0.0.1",
                "--directory", www});
  ASSERT_TRUE(accepts_connections(http_port, seconds(20))) << http.stderr_so_far();
  const Issued web = ca.issue("web", {"web.test"});
  FerryInstance ferry(terminating_config(port, http_port, {web}, log));
  ASSERT_TRUE(ferry.start()) << ferry.log();

  const std::string fport = std::to_string(port);
  const auto curl = [&](const std::vector<std::string>& extra, bool with_ca = true) {
    std::vector<std::string> argv = {
        "curl",       "--silent", "--show-error", "--verbose",
        "--max-time", "10",       "--resolve",    "web.test:" + fport + ":127.0.0.1"};
    if (with_ca) argv.insert(argv.end(), {"--cacert", ca.cert_path()});
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back("https://web.test:" + fport + "/file.txt");
    return run_program(argv, seconds(20));
  };
  const Finished plain = curl({});
  EXPECT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_EQ(plain.out, content) << plain.err;
  const Finished tls13 = curl({"--http1.1", "--tlsv1.3"});
  EXPECT_EQ(tls13.exit_code, 0) << tls13.err;
  EXPECT_EQ(tls13.out, content);
  EXPECT_TRUE(has(tls13.err, "SSL connection using TLSv1.3 / TLS_")) << tls13.err;
  const Finished tls12 = curl({"--tls-max", "1.2"});
  EXPECT_EQ(tls12.exit_code, 0) << tls12.err;
  EXPECT_EQ(tls12.out, content);
  EXPECT_TRUE(has(tls12.err, "SSL connection using TLSv1.2 / ECDHE-ECDSA-")) << tls12.err;
  // The system's CAs do not know the test CA: the chain curl checks is the one ferry sent.
  const Finished unknown = curl({}, false);
  EXPECT_EQ(unknown.exit_code, 60) << unknown.err;  // CURLE_PEER_FAILED_VERIFICATION
  EXPECT_TRUE(has(unknown.err, "SSL certificate problem")) << unknown.err;
  EXPECT_EQ(unknown.out, "");

  EXPECT_TRUE(eventually([&] { return count_of(read_file(log), "\n") >= 4; })) << read_file(log);
  const std::string logged = read_file(log);
  EXPECT_GE(count_of(logged, " tls=TLSv1.3"), 2U) << logged;
  EXPECT_EQ(count_of(logged, " tls=TLSv1.2"), 1U) << logged;
}

TEST_F(TlsClientsTest, RedisCliSpeaksTlsToAPlainRedisServer) {
  const int redis_port = free_port();
  Process redis({"redis-server", "--port", std::to_string(redis_port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", dir.path()});
  ASSERT_TRUE(accepts_connections(redis_port, seconds(20))) << redis.stderr_so_far();
  const Issued cert = ca.issue("redis", {"redis.test"});
  FerryInstance ferry(terminating_config(port, redis_port, {cert}, log));
  ASSERT_TRUE(ferry.start()) << ferry.log();

  const auto cli = [&](const std::vector<std::string>& command, bool with_ca = true) {
    std::vector<std::string> argv = {"redis-cli", "--tls", "--sni", "redis.test"};
    if (with_ca) argv.insert(argv.end(), {"--cacert", ca.cert_path()});
    argv.insert(argv.end(), {"-h", "127.0.0.1", "-p", std::to_string(port)});
    argv.insert(argv.end(), command.begin(), command.end());
    return run_program(argv, seconds(20));
  };
  const Finished set = cli({"SET", "k", "v"});
  EXPECT_EQ(set.exit_code, 0) << set.err;
  EXPECT_EQ(set.out, "OK\n") << set.err;
  const Finished get = cli({"GET", "k"});
  EXPECT_EQ(get.out, "v\n") << get.err;
  const Finished ping = cli({"PING"});
  EXPECT_EQ(ping.out, "PONG\n") << ping.err;
  // The value is in the plain server, read without TLS.
  const Finished direct = run_program(
      {"redis-cli", "-h", "127.0.0.1", "-p", std::to_string(redis_port), "GET", "k"}, seconds(20));
  EXPECT_EQ(direct.out, "v\n") << direct.err;
  // Without the test CA the handshake fails verification; no command goes through.
  const Finished unknown = cli({"SET", "k", "stranger"}, false);
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_TRUE(has(unknown.out + unknown.err, "certificate verify failed"))
      << unknown.out << unknown.err;
  EXPECT_EQ(cli({"GET", "k"}).out, "v\n");
}

// sslscan's report on a listener holding an ECDSA and an RSA certificate for one name.
class ScannedTest : public TlsClientsTest {
 protected:
  void SetUp() override {
    ferry_ = std::make_unique<FerryInstance>(terminating_config(
        port, backend_.port(),
        {ca.issue("scan-ec", {"scan.test"}), ca.issue("scan-rsa", {"scan.test"}, {}, KeyType::rsa)},
        log));
    ASSERT_TRUE(ferry_->start()) << ferry_->log();
  }
  EchoServer backend_;
  std::unique_ptr<FerryInstance> ferry_;
};

// "Accepted  TLSv1.2  256 bits  ECDHE-RSA-AES256-GCM-SHA384   Curve 25519 DHE 253"
struct ScannedCipher {
  std::string version;
  int bits = 0;
  std::string name;
};

TEST_F(ScannedTest, SslscanFindsOnlyModernProtocolsAndForwardSecretAeadCiphers) {
  const Finished scan = run_program(
      {"sslscan", "--no-colour", "--sni-name=scan.test", "127.0.0.1:" + std::to_string(port)},
      seconds(60));
  ASSERT_EQ(scan.exit_code, 0) << scan.out << scan.err;
  std::map<std::string, std::string> protocols;  // "TLSv1.2" -> "enabled"
  std::vector<ScannedCipher> ciphers;
  const std::regex protocol_line(R"(^(SSLv[23]|TLSv1\.[0-3])\s+(enabled|disabled)\s*$)");
  const std::regex cipher_line(
      R"(^(?:Accepted|Preferred)\s+(SSLv[23]|TLSv1\.[0-3])\s+(\d+) bits\s+(\S+))");
  std::istringstream lines(scan.out);
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (std::regex_search(line, m, protocol_line)) protocols[m[1]] = m[2];
    if (std::regex_search(line, m, cipher_line))
      ciphers.push_back({m[1], std::stoi(m[2].str()), m[3]});
  }
  const std::map<std::string, std::string> expected = {
      {"SSLv2", "disabled"},   {"SSLv3", "disabled"},  {"TLSv1.0", "disabled"},
      {"TLSv1.1", "disabled"}, {"TLSv1.2", "enabled"}, {"TLSv1.3", "enabled"}};
  EXPECT_EQ(protocols, expected) << scan.out;

  std::set<std::string> tls12, tls13;
  for (const ScannedCipher& c : ciphers) {
    (c.version == "TLSv1.3" ? tls13 : tls12).insert(c.name);
    EXPECT_TRUE(c.version == "TLSv1.2" || c.version == "TLSv1.3") << c.version << " " << c.name;
    EXPECT_GE(c.bits, 128) << c.name;
    // Forward secret: ECDHE, or a TLS 1.3 suite (its key exchange is always ephemeral).
    EXPECT_TRUE(c.name.starts_with("ECDHE-") ||
                (c.version == "TLSv1.3" && c.name.starts_with("TLS_")))
        << c.name;
    for (const char* weak : {"RC4", "DES", "NULL", "EXP", "MD5", "ADH", "AECDH", "anon", "PSK",
                             "SRP", "CAMELLIA", "ARIA", "SEED", "IDEA"})
      EXPECT_FALSE(has(c.name, weak)) << c.name;
    // AEAD only: no CBC suite (whose names carry no GCM / POLY1305 / CCM).
    EXPECT_TRUE(has(c.name, "GCM") || has(c.name, "POLY1305")) << c.name << " is CBC";
  }
  // The documented defaults, and both key types' suites: the RSA certificate is used too.
  EXPECT_EQ(tls12,
            (std::set<std::string>{"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
                                   "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
                                   "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305"}))
      << scan.out;
  EXPECT_EQ(tls13, (std::set<std::string>{"TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
                                          "TLS_AES_128_GCM_SHA256"}))
      << scan.out;

  // No renegotiation at all, no compression, no heartbleed; a downgrade is refused.
  // (Debian's sslscan cannot test compression: its OpenSSL has none, and says so.)
  EXPECT_TRUE(has(scan.out, "Session renegotiation not supported")) << scan.out;
  EXPECT_FALSE(has(scan.out, "Insecure session renegotiation supported")) << scan.out;
  EXPECT_FALSE(has(scan.out, "Compression enabled")) << scan.out;
  EXPECT_TRUE(has(scan.out, "Server supports TLS Fallback SCSV")) << scan.out;
  EXPECT_EQ(count_of(scan.out, "vulnerable to heartbleed"),
            count_of(scan.out, "not vulnerable to heartbleed"))
      << scan.out;
  EXPECT_TRUE(has(scan.out, "Subject:  scan.test")) << scan.out;
}

// testssl.sh (Debian's testssl.sh, /usr/bin/testssl) with fast options: about 25-30 s here,
// the protocols and the cipher categories only (its full run takes minutes).
TEST_F(ScannedTest, TestsslFindsNoWeakProtocolOrCipherCategory) {
  if (::access("/usr/bin/testssl", X_OK) != 0) GTEST_SKIP() << "testssl.sh is not installed";
  const Finished scan =
      run_program({"testssl", "--quiet", "--color", "0", "--warnings", "batch", "--fast",
                   "--protocols", "--std", "127.0.0.1:" + std::to_string(port)},
                  seconds(120));
  ASSERT_EQ(scan.exit_code, 0) << scan.out << scan.err;
  // " TLS 1.1    not offered", " NULL ciphers (no encryption)   not offered (OK)"
  const auto verdict = [&](const std::string& label) {
    std::istringstream lines(scan.out);
    for (std::string line; std::getline(lines, line);) {
      const std::size_t start = line.find_first_not_of(' ');
      if (start == std::string::npos || line.compare(start, label.size(), label) != 0) continue;
      const std::string rest = line.substr(start + label.size());
      if (rest.empty() || rest[0] != ' ') continue;  // "TLS 1" is not "TLS 1.1"
      if (has(rest, "not offered")) return std::string("not offered");
      if (has(rest, "offered")) return std::string("offered");
    }
    return std::string("missing");
  };
  for (const char* off :
       {"SSLv2", "SSLv3", "TLS 1", "TLS 1.1", "NULL ciphers", "Anonymous NULL Ciphers",
        "Export ciphers", "LOW:", "Triple DES Ciphers", "Obsolete CBC ciphers"})
    EXPECT_EQ(verdict(off), "not offered") << off << "\n" << scan.out;
  for (const char* on : {"TLS 1.2", "TLS 1.3", "Strong encryption (AEAD ciphers)"})
    EXPECT_EQ(verdict(on), "offered") << on << "\n" << scan.out;
}

}  // namespace
}  // namespace ferry::test
