// TLS test helpers: OpenSSL's client run against memory BIOs for a ClientHello, and the
// openssl tools run as processes.
#include "tests/support/tls_tools.h"

#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>

#include <csignal>
#include <string_view>

#include "tests/support/config_text.h"
#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/sockets.h"

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

namespace {
std::string pair_text(const Issued& i) {
  return "{ certificate = \"" + i.cert_path + "\"; key = \"" + i.key_path + "\"; }";
}
}  // namespace

std::string terminating_config(int port, int backend, const std::vector<Issued>& certs,
                               const std::string& log, const std::string& tls_extra, int workers) {
  std::string list;
  for (const Issued& c : certs) list += (list.empty() ? "" : ", ") + pair_text(c);
  const ProxySpec p{.name = "tls",
                    .listen = {loopback(port)},
                    .upstream = loopback(backend),
                    .extra = "access_log = \"" + log + "\"; tls = { certificates = ( " + list +
                             " ); " + tls_extra + " };"};
  return config_text("worker_processes = " + std::to_string(workers) + ";", {p});
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
  return accepts_connections(port_, limit);
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

namespace ferry::test {

namespace {

std::string ssl_error_text() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "no OpenSSL error queued";
  char text[256];
  ERR_error_string_n(e, text, sizeof text);
  return text;
}

}  // namespace

TlsClient::TlsClient(int port, const TlsClientOptions& o) {
  ::signal(SIGPIPE, SIG_IGN);  // its close_notify to a server that reset is an EPIPE, not a death
  fd_ = connect_to_port(port);
  if (fd_ == -1) {
    error_ = "connect failed";
    return;
  }
  ctx_ = SSL_CTX_new(TLS_client_method());
  if (ctx_ == nullptr) return;
  if (o.max_version != 0) SSL_CTX_set_max_proto_version(ctx_, o.max_version);
  if (!o.sigalgs.empty()) SSL_CTX_set1_sigalgs_list(ctx_, o.sigalgs.c_str());
  if (!o.ca.empty()) {
    SSL_CTX_load_verify_locations(ctx_, o.ca.c_str(), nullptr);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
  }
  if (!o.cert.empty() &&
      (SSL_CTX_use_certificate_chain_file(ctx_, o.cert.c_str()) != 1 ||
       SSL_CTX_use_PrivateKey_file(ctx_, o.key.c_str(), SSL_FILETYPE_PEM) != 1)) {
    error_ = "client certificate: " + ssl_error_text();
    return;
  }
  ssl_ = SSL_new(ctx_);
  if (ssl_ == nullptr) return;
  SSL_set_fd(ssl_, fd_);
  if (!o.sni.empty()) SSL_set_tlsext_host_name(ssl_, o.sni.c_str());
  const std::string name = o.verify_name.empty() ? o.sni : o.verify_name;
  if (!o.ca.empty() && !name.empty()) SSL_set1_host(ssl_, name.c_str());
  if (!o.alpn.empty()) {
    std::string wire;
    for (const std::string& p : o.alpn) wire += static_cast<char>(p.size()) + p;
    SSL_set_alpn_protos(ssl_, reinterpret_cast<const unsigned char*>(wire.data()),
                        static_cast<unsigned>(wire.size()));
  }
  if (o.resume != nullptr) SSL_set_session(ssl_, o.resume);
  if (SSL_connect(ssl_) != 1) {
    error_ = ssl_error_text();
    return;
  }
  connected_ = true;
}

TlsClient::~TlsClient() {
  // A session freed without close_notify is marked unresumable (and a shared one with it).
  if (ssl_ != nullptr && connected_) SSL_shutdown(ssl_);
  ERR_clear_error();
  if (ssl_ != nullptr) SSL_free(ssl_);
  if (ctx_ != nullptr) SSL_CTX_free(ctx_);
  if (fd_ != -1) ::close(fd_);
}

bool TlsClient::write(const std::string& data) {
  if (!connected_) return false;
  std::size_t done = 0;
  while (done < data.size()) {
    std::size_t n = 0;
    if (SSL_write_ex(ssl_, data.data() + done, data.size() - done, &n) != 1) {
      error_ = ssl_error_text();
      return false;
    }
    done += n;
  }
  return true;
}

std::string TlsClient::read(std::size_t n) {
  std::string out;
  if (!connected_) return out;
  out.resize(n);
  std::size_t got = 0;
  while (got < n) {
    std::size_t r = 0;
    if (SSL_read_ex(ssl_, out.data() + got, n - got, &r) != 1) {
      error_ = ssl_error_text();
      break;
    }
    got += r;
  }
  out.resize(got);
  return out;
}

std::string TlsClient::peer_subject() const {
  if (ssl_ == nullptr) return {};
  X509* cert = SSL_get1_peer_certificate(ssl_);
  if (cert == nullptr) return {};
  char text[512];
  X509_NAME_oneline(X509_get_subject_name(cert), text, sizeof text);
  X509_free(cert);
  return text;
}

std::string TlsClient::version() const { return ssl_ != nullptr ? SSL_get_version(ssl_) : ""; }

std::string TlsClient::alpn() const {
  const unsigned char* p = nullptr;
  unsigned len = 0;
  if (ssl_ != nullptr) SSL_get0_alpn_selected(ssl_, &p, &len);
  return p != nullptr ? std::string(reinterpret_cast<const char*>(p), len) : std::string();
}

bool TlsClient::resumed() const { return ssl_ != nullptr && SSL_session_reused(ssl_) == 1; }

std::string TlsClient::peer_key_type() const {
  if (ssl_ == nullptr) return {};
  X509* cert = SSL_get1_peer_certificate(ssl_);
  if (cert == nullptr) return {};
  const int id = EVP_PKEY_get_base_id(X509_get0_pubkey(cert));
  X509_free(cert);
  return id == EVP_PKEY_EC ? "EC" : id == EVP_PKEY_RSA ? "RSA" : "other";
}

SSL_SESSION* TlsClient::take_session() {
  if (!connected_) return nullptr;
  // TLS 1.3 tickets come after the handshake: a read that times out briefly takes them in.
  if (SSL_version(ssl_) == TLS1_3_VERSION) {
    const timeval brief{0, 200'000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &brief, sizeof brief);
    char byte;
    std::size_t n = 0;
    (void)SSL_read_ex(ssl_, &byte, 0, &n);
    ERR_clear_error();
    const timeval normal{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &normal, sizeof normal);
  }
  return SSL_get1_session(ssl_);
}

bool TlsClient::renegotiate() {
  if (!connected_ || SSL_renegotiate(ssl_) != 1) return false;
  const bool ok = SSL_do_handshake(ssl_) == 1;
  ERR_clear_error();
  return ok;
}

bool TlsClient::closed_by_server(std::chrono::milliseconds limit) {
  const timeval t{static_cast<time_t>(limit.count() / 1000),
                  static_cast<suseconds_t>(limit.count() % 1000 * 1000)};
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &t, sizeof t);
  char byte;
  std::size_t n = 0;
  if (ssl_ == nullptr) return false;
  const int r = SSL_read_ex(ssl_, &byte, 1, &n);
  const int e = SSL_get_error(ssl_, r);
  ERR_clear_error();
  // EOF, close_notify or an alert: closed; a timeout (EAGAIN under SO_RCVTIMEO): not.
  return r != 1 && (e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SSL ||
                    (e == SSL_ERROR_SYSCALL && errno != EAGAIN && errno != EWOULDBLOCK));
}

bool TlsClient::ends_with_close_notify() {
  if (!connected_) return false;
  char buf[4096];
  std::size_t n = 0;
  int r = 0;
  while ((r = SSL_read_ex(ssl_, buf, sizeof buf, &n)) == 1) {
  }
  const bool clean = SSL_get_error(ssl_, r) == SSL_ERROR_ZERO_RETURN;
  if (!clean) error_ = ssl_error_text();
  return clean;
}

void TlsClient::shutdown_write() {
  if (ssl_ != nullptr) SSL_shutdown(ssl_);
  ::shutdown(fd_, SHUT_WR);
}

}  // namespace ferry::test

namespace ferry::test {

TlsEchoServer::TlsEchoServer(const std::string& cert, const std::string& key,
                             const std::string& client_ca, bool proxy_header)
    : proxy_header_(proxy_header) {
  // A peer that resets (ferry after its client did) must not kill the test with SIGPIPE when
  // OpenSSL writes (the echo, or its close_notify) to it.
  ::signal(SIGPIPE, SIG_IGN);
  ctx_ = SSL_CTX_new(TLS_server_method());
  if (ctx_ == nullptr || SSL_CTX_use_certificate_chain_file(ctx_, cert.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx_, key.c_str(), SSL_FILETYPE_PEM) != 1) {
    return;
  }
  if (!client_ca.empty()) {
    SSL_CTX_load_verify_locations(ctx_, client_ca.c_str(), nullptr);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  fd_ = listen_on("127.0.0.1", port_);
  if (fd_ == -1) return;
  acceptor_ = std::thread([this] { serve(); });
}

bool TlsEchoServer::forget_sessions() {
  unsigned char keys[80];  // name, HMAC secret, AES key
  if (ctx_ == nullptr || RAND_bytes(keys, sizeof keys) != 1 ||
      SSL_CTX_set_tlsext_ticket_keys(ctx_, keys, sizeof keys) != 1) {
    return false;
  }
  SSL_CTX_set_session_cache_mode(ctx_, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL);
  return true;
}

TlsEchoServer::~TlsEchoServer() {
  stop_ = true;
  if (fd_ != -1) ::shutdown(fd_, SHUT_RDWR);  // wakes the accept
  if (acceptor_.joinable()) acceptor_.join();
  for (auto& t : threads_) t.join();
  if (fd_ != -1) ::close(fd_);
  if (ctx_ != nullptr) SSL_CTX_free(ctx_);
}

std::string TlsEchoServer::last_sni() const {
  const std::lock_guard lock(mutex_);
  return last_sni_;
}

std::string TlsEchoServer::last_header() const {
  const std::lock_guard lock(mutex_);
  return last_header_;
}

void TlsEchoServer::serve() {
  while (!stop_) {
    const int c = accept_within(fd_, std::chrono::milliseconds(200));
    if (c == -1) continue;
    threads_.emplace_back([this, c] { echo(c); });
  }
}

void TlsEchoServer::echo(int fd) {
  const timeval t{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &t, sizeof t);
  if (proxy_header_) {  // byte by byte: nothing of the ClientHello behind it may be taken
    std::string line;
    char c = 0;
    while (line.size() < 108 && ::recv(fd, &c, 1, 0) == 1) {
      line += c;
      if (line.ends_with("\r\n")) break;
    }
    const std::lock_guard lock(mutex_);
    last_header_ = line;
  }
  SSL* ssl = SSL_new(ctx_);
  SSL_set_fd(ssl, fd);
  if (SSL_accept(ssl) == 1) {
    ++handshakes_;
    if (SSL_session_reused(ssl) == 1) ++resumed_;
    {
      const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
      const std::lock_guard lock(mutex_);
      last_sni_ = sni != nullptr ? sni : "";
    }
    char buf[16384];
    std::size_t n = 0;
    while (!stop_ && SSL_read_ex(ssl, buf, sizeof buf, &n) == 1) {
      std::size_t done = 0;
      while (done < n) {
        std::size_t w = 0;
        if (SSL_write_ex(ssl, buf + done, n - done, &w) != 1) break;
        done += w;
      }
    }
    SSL_shutdown(ssl);
  }
  ERR_clear_error();
  SSL_free(ssl);
  ::close(fd);
}

}  // namespace ferry::test
