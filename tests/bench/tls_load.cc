// tls_load: the TLS load generator of tests/bench/proxy-bench --tls (docs/benchmarks.md). One
// process, one thread, epoll and non-blocking sockets, so that the clients cost the proxies'
// machine little. Modes:
//   handshake  --connections N loop connect, full TLS handshake (SNI, no verification), close
//   resume     the same, each offering one session whose TLS 1.3 ticket is taken first
//   bulk       N connections each writing 1 MiB SSL_writes for --duration, then a FIN, until
//              the proxy closes
//   sink       a plain TCP server that reads and drops every byte (bulk's backend), until killed
// The client modes print one JSON line of totals on stdout; errors go to stderr.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kChunk = 1 << 20;  // bytes per SSL_write (bulk) and per read (sink)
constexpr auto kTicketWait = std::chrono::seconds(5);  // for the session to resume
constexpr auto kCloseWait = std::chrono::seconds(30);  // bulk: for the proxy to close after FIN

struct Options {
  std::string mode;
  std::string host = "127.0.0.1";
  int port = 0;
  std::string sni;
  int connections = 1;
  double duration = 1;
};

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "tls_load: %s\n", msg.c_str());
  std::exit(1);
}

[[noreturn]] void die_errno(const std::string& what) { die(what + ": " + std::strerror(errno)); }

void usage() {
  std::fprintf(stderr,
               "usage: tls_load handshake|resume|bulk --port PORT [--host IPV4] [--sni NAME]\n"
               "                [--connections N] [--duration SECONDS]\n"
               "       tls_load sink --port PORT\n");
  std::exit(2);
}

Options parse(int argc, char** argv) {
  if (argc < 2) usage();
  Options o;
  o.mode = argv[1];
  if (o.mode != "handshake" && o.mode != "resume" && o.mode != "bulk" && o.mode != "sink") usage();
  for (int i = 2; i < argc; i += 2) {
    std::string_view key = argv[i];
    if (i + 1 >= argc) die(std::string(key) + " needs a value");
    const char* value = argv[i + 1];
    char* end = nullptr;
    errno = 0;
    if (key == "--host") {
      o.host = value;
    } else if (key == "--sni") {
      o.sni = value;
    } else if (key == "--port" || key == "--connections") {
      long n = std::strtol(value, &end, 10);
      if (errno || *end || n < 1 || n > (key == "--port" ? 65535 : 100000))
        die("bad " + std::string(key) + " " + value);
      (key == "--port" ? o.port : o.connections) = static_cast<int>(n);
    } else if (key == "--duration") {
      o.duration = std::strtod(value, &end);
      if (errno || *end || !(o.duration > 0) || o.duration > 86400)
        die(std::string("bad --duration ") + value);
    } else {
      usage();
    }
  }
  if (o.port == 0) die("--port is required");
  return o;
}

int epoll_fd() {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die_errno("epoll_create1");
  return ep;
}

void epoll_set(int ep, int op, int fd, uint32_t events, uint64_t data) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = data;
  if (epoll_ctl(ep, op, fd, &ev) < 0) die_errno("epoll_ctl");
}

// Milliseconds from now to `until`, rounded up, at least 0.
int ms_until(Clock::time_point until) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(until - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

// --- sink --------------------------------------------------------------------------------------

[[noreturn]] void sink(const Options& o) {
  int srv = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (srv < 0) die_errno("socket");
  int one = 1;
  if (setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) die_errno("SO_REUSEADDR");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(o.port));
  if (inet_pton(AF_INET, o.host.c_str(), &addr.sin_addr) != 1) die("bad --host " + o.host);
  if (bind(srv, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
    die_errno("bind " + o.host + ":" + std::to_string(o.port));
  if (listen(srv, 4096) < 0) die_errno("listen");
  int ep = epoll_fd();
  epoll_set(ep, EPOLL_CTL_ADD, srv, EPOLLIN, static_cast<uint64_t>(srv));
  std::vector<char> buf(kChunk);
  epoll_event events[64];
  for (;;) {  // until killed (proxy-bench stops its backends with SIGTERM)
    int n = epoll_wait(ep, events, 64, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die_errno("epoll_wait");
    for (int i = 0; i < n; ++i) {
      int fd = static_cast<int>(events[i].data.u64);
      if (fd == srv) {
        int c = accept4(srv, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c >= 0) {
          epoll_set(ep, EPOLL_CTL_ADD, c, EPOLLIN, static_cast<uint64_t>(c));
        } else if (errno != EAGAIN && errno != ECONNABORTED && errno != EINTR) {
          die_errno("accept4");
        }
        continue;
      }
      ssize_t got = read(fd, buf.data(), buf.size());
      if (got > 0 || (got < 0 && (errno == EAGAIN || errno == EINTR))) continue;
      if (got < 0 && errno != ECONNRESET)
        std::fprintf(stderr, "tls_load: read: %s\n", std::strerror(errno));
      if (close(fd) < 0) die_errno("close");
    }
  }
}

// --- the TLS clients ---------------------------------------------------------------------------

// What went wrong in an SSL call that returned `ret`, for the first failure's message.
std::string ssl_error(SSL* ssl, int ret) {
  int e = SSL_get_error(ssl, ret);
  if (e == SSL_ERROR_SYSCALL) {
    unsigned long q = ERR_peek_error();
    if (q == 0) return errno ? std::strerror(errno) : "unexpected EOF";
  }
  if (e == SSL_ERROR_ZERO_RETURN) return "the peer closed (close_notify)";
  char text[256];
  ERR_error_string_n(ERR_get_error(), text, sizeof text);
  return text;
}

struct Totals {
  long handshakes = 0;
  long resumed = 0;
  long failed = 0;
  unsigned long long bytes = 0;
  std::string version = "";
  std::string cipher = "";
  std::string first_error = "";
};

class Load {
 public:
  explicit Load(const Options& o) : o_(o), conns_(static_cast<size_t>(o.connections)) {
    addr_.sin_family = AF_INET;
    addr_.sin_port = htons(static_cast<uint16_t>(o.port));
    if (inet_pton(AF_INET, o.host.c_str(), &addr_.sin_addr) != 1) die("bad --host " + o.host);
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (ctx_ == nullptr) die("SSL_CTX_new failed");
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_NONE, nullptr);  // as `openssl s_time`
    ep_ = epoll_fd();
    chunk_.assign(kChunk, '\0');
  }

  // resume: one handshake, then the records after it read (TLS 1.3 sends its tickets after the
  // handshake) until the session holds a ticket; blocking with poll, bounded by kTicketWait.
  void take_ticket() {
    auto until = Clock::now() + kTicketWait;
    int fd = connect_fd();
    if (fd < 0) die("no session to resume: connect: " + std::string(std::strerror(-fd)));
    SSL* ssl = new_ssl(fd);
    for (;;) {
      ERR_clear_error();
      bool finished = SSL_is_init_finished(ssl);
      char byte;
      int r = finished ? SSL_read(ssl, &byte, 1) : SSL_do_handshake(ssl);
      if (SSL_SESSION* s = SSL_get1_session(ssl)) {
        if (SSL_SESSION_has_ticket(s)) {
          session_ = s;
          break;
        }
        SSL_SESSION_free(s);
      }
      if (r > 0) continue;  // the handshake done (or a byte read): read on
      int e = SSL_get_error(ssl, r);
      if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
        die("no session to resume: " + ssl_error(ssl, r));
      pollfd p{fd, static_cast<short>(e == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN), 0};
      int n = poll(&p, 1, ms_until(until));
      if (n < 0 && errno != EINTR) die_errno("poll");
      if (n == 0) die("no session ticket within 5 s");
    }
    SSL_shutdown(ssl);  // close_notify: a session freed without it is not resumable
    SSL_free(ssl);
    if (close(fd) < 0) die_errno("close");
  }

  int run() {
    auto start = Clock::now();
    until_ = start + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(o_.duration));
    for (size_t i = 0; i < conns_.size(); ++i) open(i);
    epoll_event events[256];
    while (busy_ > 0) {
      auto now = Clock::now();
      if (now >= until_ && !bulk()) break;  // the handshakes under way are not counted
      if (now >= until_ + kCloseWait) die("the proxy did not close within 30 s of the FINs");
      int n = epoll_wait(ep_, events, 256, ms_until(now < until_ ? until_ : until_ + kCloseWait));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) die_errno("epoll_wait");
      for (int i = 0; i < n; ++i) {
        size_t index = events[i].data.u64 & 0xffffffff;
        Conn& c = conns_[index];
        if (c.fd >= 0 && c.generation == events[i].data.u64 >> 32) step(index);
      }
    }
    // handshake, resume: over at the deadline; bulk: once the last connection is closed.
    auto end = bulk() ? last_close_ : Clock::now();
    if (bulk()) start = first_write_;
    for (Conn& c : conns_) drop(c);
    return report(std::chrono::duration<double>(end - start).count());
  }

 private:
  enum class State { kConnecting, kHandshake, kWriting, kClosing };
  struct Conn {
    int fd = -1;
    SSL* ssl = nullptr;
    State state = State::kConnecting;
    uint32_t events = 0;
    uint64_t generation = 0;
  };

  bool bulk() const { return o_.mode == "bulk"; }

  int connect_fd() {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die_errno("socket");
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) die_errno("TCP_NODELAY");
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr_), sizeof addr_) < 0 && errno != EINPROGRESS)
      return -errno;
    return fd;
  }

  SSL* new_ssl(int fd) {
    SSL* ssl = SSL_new(ctx_);
    if (ssl == nullptr || SSL_set_fd(ssl, fd) != 1) die("SSL_new or SSL_set_fd failed");
    if (!o_.sni.empty() && SSL_set_tlsext_host_name(ssl, o_.sni.c_str()) != 1)
      die("SSL_set_tlsext_host_name failed");
    if (session_ && SSL_set_session(ssl, session_) != 1) die("SSL_set_session failed");
    SSL_set_connect_state(ssl);
    return ssl;
  }

  // A new connection in slot `index`; a refused connect counts as a failure and is retried
  // at once (a dead proxy shows as failures over the duration, not as a hang).
  void open(size_t index) {
    Conn& c = conns_[index];
    for (;;) {
      int fd = connect_fd();
      if (fd >= 0) {
        c = Conn{fd, nullptr, State::kConnecting, EPOLLOUT, c.generation + 1};
        epoll_set(ep_, EPOLL_CTL_ADD, fd, EPOLLOUT, c.generation << 32 | index);
        ++busy_;
        return;
      }
      fail(std::string("connect: ") + std::strerror(-fd));
      if (Clock::now() >= until_) return;
    }
  }

  void want(size_t index, uint32_t events) {
    Conn& c = conns_[index];
    if (c.events == events) return;
    c.events = events;
    epoll_set(ep_, EPOLL_CTL_MOD, c.fd, events, c.generation << 32 | index);
  }

  void drop(Conn& c) {
    if (c.ssl) SSL_free(c.ssl);
    if (c.fd >= 0 && close(c.fd) < 0) die_errno("close");
    if (c.fd >= 0) --busy_;
    c.ssl = nullptr;
    c.fd = -1;
  }

  void fail(const std::string& why) {
    if (t_.failed++ == 0) t_.first_error = why;
  }

  // Waits as the SSL call that returned `r` asks, or fails the connection; false when done.
  bool again(size_t index, int r, const char* what) {
    int e = SSL_get_error(conns_[index].ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      want(index, e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT);
      return true;
    }
    fail(std::string(what) + ": " + ssl_error(conns_[index].ssl, r));
    drop(conns_[index]);
    if (!bulk()) open(index);
    return false;
  }

  void step(size_t index) {
    Conn& c = conns_[index];
    if (c.state == State::kConnecting) {
      int err = 0;
      socklen_t len = sizeof err;
      if (getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) die_errno("SO_ERROR");
      if (err) {
        fail(std::string("connect: ") + std::strerror(err));
        drop(c);
        if (!bulk()) open(index);
        return;
      }
      c.ssl = new_ssl(c.fd);
      c.state = State::kHandshake;
    }
    if (c.state == State::kHandshake) {
      ERR_clear_error();
      int r = SSL_do_handshake(c.ssl);
      if (r != 1) {
        again(index, r, "handshake");
        return;
      }
      ++t_.handshakes;
      t_.resumed += SSL_session_reused(c.ssl);
      t_.version = SSL_get_version(c.ssl);
      t_.cipher = SSL_get_cipher_name(c.ssl);
      if (!bulk()) {
        // resume: close_notify so that the session stays resumable; handshake: closed at once,
        // as `openssl s_time` does.
        if (session_) SSL_shutdown(c.ssl);
        drop(c);
        open(index);
        return;
      }
      if (t_.handshakes == 1) first_write_ = Clock::now();
      c.state = State::kWriting;
    }
    while (c.state == State::kWriting) {
      if (Clock::now() >= until_) {
        // A FIN under the TLS layer; then the proxy's close (the sink has read everything).
        if (shutdown(c.fd, SHUT_WR) < 0) die_errno("shutdown");
        c.state = State::kClosing;
        want(index, EPOLLIN);
        return;
      }
      ERR_clear_error();
      int r = SSL_write(c.ssl, chunk_.data(), static_cast<int>(chunk_.size()));
      if (r <= 0) {
        again(index, r, "write");
        return;
      }
      t_.bytes += static_cast<unsigned>(r);
    }
    if (c.state == State::kClosing) {
      ssize_t got = read(c.fd, chunk_.data(), chunk_.size());  // the raw bytes, dropped
      if (got > 0 || (got < 0 && (errno == EAGAIN || errno == EINTR))) return;
      if (got < 0 && errno != ECONNRESET) fail(std::string("read: ") + std::strerror(errno));
      last_close_ = Clock::now();
      drop(c);
    }
  }

  int report(double seconds) {
    rusage ru{};
    if (getrusage(RUSAGE_SELF, &ru) < 0) die_errno("getrusage");
    double cpu = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                 static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    std::printf(
        "{\"handshakes\":%ld,\"resumed\":%ld,\"failed\":%ld,\"seconds\":%.6f,\"version\":\"%s\","
        "\"cipher\":\"%s\",\"cpu_seconds\":%.6f,\"bytes\":%llu}\n",
        t_.handshakes, t_.resumed, t_.failed, seconds, t_.version.c_str(), t_.cipher.c_str(), cpu,
        t_.bytes);
    if (std::fflush(stdout) != 0) die_errno("stdout");
    if (t_.failed) {
      std::fprintf(stderr, "tls_load: %ld failed; the first: %s\n", t_.failed,
                   t_.first_error.c_str());
    }
    if (t_.handshakes == 0 || (bulk() && t_.bytes == 0)) {
      std::fprintf(stderr, "tls_load: nothing succeeded against %s:%d\n", o_.host.c_str(), o_.port);
      return 1;
    }
    return 0;
  }

  const Options& o_;
  sockaddr_in addr_{};
  SSL_CTX* ctx_ = nullptr;
  SSL_SESSION* session_ = nullptr;
  int ep_ = -1;
  std::vector<Conn> conns_;
  std::vector<char> chunk_;
  long busy_ = 0;  // connections open
  Clock::time_point until_{};
  Clock::time_point first_write_{};
  Clock::time_point last_close_{};
  Totals t_;
};

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  // A write to a connection the peer reset fails with EPIPE instead of killing the process.
  if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) die_errno("signal");
  if (o.mode == "sink") sink(o);
  Load load(o);
  if (o.mode == "resume") load.take_ticket();
  return load.run();
}
