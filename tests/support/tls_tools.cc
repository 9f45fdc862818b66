// TLS test helpers: OpenSSL's client run against memory BIOs for a ClientHello, and the
// openssl tools run as processes.
#include "tests/support/tls_tools.h"

#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/ssl.h>

#include <string_view>

#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"

namespace ferry::test {

std::string client_hello_bytes(const std::string& sni, const std::vector<std::string>& alpn) {
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()),
                                                        SSL_CTX_free);
  if (!ctx) return {};
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.get()), SSL_free);
  if (!ssl) return {};
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  if (in == nullptr || out == nullptr) {
    BIO_free(in);
    BIO_free(out);
    return {};
  }
  SSL_set_bio(ssl.get(), in, out);  // owned by the SSL from here
  if (!sni.empty()) SSL_set_tlsext_host_name(ssl.get(), sni.c_str());
  if (!alpn.empty()) {
    std::string wire;
    for (const std::string& p : alpn) wire += static_cast<char>(p.size()) + p;
    SSL_set_alpn_protos(ssl.get(), reinterpret_cast<const unsigned char*>(wire.data()),
                        static_cast<unsigned>(wire.size()));
  }
  SSL_connect(ssl.get());  // wants to read the server's answer: the hello is out
  char* data = nullptr;
  const long n = BIO_get_mem_data(out, &data);
  return n > 0 ? std::string(data, static_cast<std::size_t>(n)) : std::string();
}

CertFiles self_signed(const std::string& dir, const std::string& cn) {
  CertFiles f{dir + "/" + cn + ".pem", dir + "/" + cn + ".key"};
  const Finished r = run_program({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                                  "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
                                  "/CN=" + cn, "-keyout", f.key, "-out", f.cert});
  if (r.exit_code != 0) return {};
  return f;
}

TlsServer::TlsServer(int port, const CertFiles& cert, const std::vector<std::string>& alpn)
    : port_(port) {
  std::vector<std::string> argv = {
      "openssl", "s_server", "-accept", "127.0.0.1:" + std::to_string(port),
      "-cert",   cert.cert,  "-key",    cert.key,
      "-www",    "-quiet"};
  if (!alpn.empty()) {
    std::string list;
    for (const std::string& p : alpn) list += (list.empty() ? "" : ",") + p;
    argv.insert(argv.end(), {"-alpn", list});
  }
  process_ = std::make_unique<Process>(argv);
}

bool TlsServer::started(std::chrono::milliseconds limit) {
  return eventually(
      [&] {
        const int fd = connect_to_port(port_);
        if (fd != -1) ::close(fd);
        return fd != -1;
      },
      limit);
}

Finished s_client(int port, const std::string& sni, const std::vector<std::string>& alpn,
                  const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {"openssl", "s_client", "-connect",
                                   "127.0.0.1:" + std::to_string(port)};
  if (sni.empty()) {
    argv.push_back("-noservername");
  } else {
    argv.insert(argv.end(), {"-servername", sni});
  }
  if (!alpn.empty()) {
    std::string list;
    for (const std::string& p : alpn) list += (list.empty() ? "" : ",") + p;
    argv.insert(argv.end(), {"-alpn", list});
  }
  argv.insert(argv.end(), extra.begin(), extra.end());
  return run_program(argv, std::chrono::seconds(20));
}

std::string peer_subject(const Finished& f) {
  constexpr std::string_view kSubject = "subject=";
  const auto at = f.out.find(kSubject);
  if (at == std::string::npos) return {};
  const auto end = f.out.find('\n', at);
  return f.out.substr(at + kSubject.size(),
                      end == std::string::npos ? end : end - at - kSubject.size());
}

}  // namespace ferry::test
