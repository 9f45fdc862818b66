// Session's server side: connect to the server the balancer picks, fail over to the next on a
// refused or timed-out connect (within next_upstream_tries and next_upstream_timeout), the
// answer to a Fast Open connect awaited while relaying, the verdict on each server, and the
// PROXY header sent on once connected.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <string>
#include <system_error>

#include <spdlog/spdlog.h>

#include "event/syscall_util.h"
#include "worker/proxy/session.h"
#include "worker/tls/client_context.h"
#include "worker/tls/tls_io.h"

namespace ferry::worker {

using event::Connection;
using event::Event;

void set_socket_options(int fd, const conf::Proxy& proxy, bool set_off) {
  const int nodelay = proxy.tcp_nodelay ? 1 : 0;
  if ((nodelay != 0 || set_off) &&
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof nodelay) == -1) {
    spdlog::warn("setsockopt(TCP_NODELAY) failed: {}", event::last_error().message());
  }
  const int keepalive = proxy.so_keepalive ? 1 : 0;
  if ((keepalive != 0 || set_off) &&
      ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &keepalive, sizeof keepalive) == -1) {
    spdlog::warn("setsockopt(SO_KEEPALIVE) failed: {}", event::last_error().message());
  }
}

// Where the kernel holds the server's cookie, connect() then returns at once and the first
// send() carries the SYN with the bytes; without one it connects as usual, asking for a cookie.
static void set_fastopen_connect(int fd) {
  const int on = 1;
  // A kernel without it refuses every socket alike: said once per worker, not per connection.
  static bool warned = false;
  if (::setsockopt(fd, IPPROTO_TCP, TCP_FASTOPEN_CONNECT, &on, sizeof on) == -1 && !warned) {
    warned = true;
    spdlog::warn("setsockopt(TCP_FASTOPEN_CONNECT) failed: {}", event::last_error().message());
  }
}

// Connects to the next server the balancer offers; false when none is left (closed).
bool Session::connect_next() {
  phase_ = Phase::connecting;
  const event::TimePoint now = loop_.now();
  for (;;) {
    const bool out_of_tries =
        proxy_.next_upstream_tries > 0 && tries_ >= proxy_.next_upstream_tries;
    const bool out_of_time = proxy_.next_upstream_timeout.count() > 0 && tries_ > 0 &&
                             now - started_ >= proxy_.next_upstream_timeout;
    Peer* next =
        out_of_tries || out_of_time ? nullptr : balancer_->pick(client_->peer, tried_, now);
    if (next == nullptr) {
      spdlog::warn("proxy \"{}\": no server could take client {} ({} tried)", proxy_.name,
                   client_->peer.to_string(), tries_);
      close(EndReason::connect_failed);
      return false;
    }
    ++tries_;
    peer_ = next;
    event::UniqueFd fd(
        ::socket(peer_->address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) {
      const int err = errno;
      spdlog::error("socket() for {} failed: {}", peer_->name, event::errno_code(err).message());
      if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        // Short of descriptors or memory here, which is no fault of the server: marked failed
        // it would be refused to every client for fail_timeout after the shortage is over.
        // Another server would fare no better.
        balancer_->abandon(*peer_);
        peer_ = nullptr;
        close(EndReason::connect_failed);
        return false;
      }
      failed_peer();
      continue;
    }
    set_socket_options(fd.get(), proxy_, false);
    // Not where a PROXY header goes in clear before TLS: its send would have to wait for the
    // handshake when the kernel falls back to a plain SYN.
    if (proxy_.fastopen_connect && (proxy_.send_proxy_protocol == conf::ProxyProtocol::off ||
                                    shared_.client_tls(upstream_name()) == nullptr)) {
      set_fastopen_connect(fd.get());
    }
    const int rc = ::connect(fd.get(), peer_->address.get(), peer_->address.length());
    if (rc == -1 && errno != EINPROGRESS) {
      spdlog::warn("proxy \"{}\": connect to {} failed: {}", proxy_.name, peer_->name,
                   event::last_error().message());
      failed_peer();
      continue;
    }
    upstream_ = loop_.get_connection(std::move(fd));
    if (upstream_ == nullptr) {
      spdlog::warn("proxy \"{}\": worker_connections are not enough", proxy_.name);
      balancer_->abandon(*peer_);  // no fault of the server
      peer_ = nullptr;
      close(EndReason::no_connections);
      return false;
    }
    // A non-blocking TCP connect returns 0 only where Fast Open put it off until the first send.
    fastopen_ = rc == 0 && proxy_.fastopen_connect ? FastOpen::unsent : FastOpen::none;
    upstream_->peer = peer_->address;
    upstream_->data = this;
    upstream_->read.handler = upstream_->write.handler = on_upstream_event;
    if (loop_.add_connection(*upstream_)) {
      close(EndReason::connect_failed);
      return false;
    }
    loop_.add_timer(upstream_->write, proxy_.connect_timeout);
    return true;
  }
}

void Session::failed_peer() {
  ServerCounters* c = shared_.server_stats(upstream_name(), *peer_);
  if (c != nullptr) stat_add(c->connect_failures);
  release_peer(true, c);
  peer_ = nullptr;
}

// Gives `peer_` back to the balancer with the verdict on it, and publishes whether its passive
// checks now hold the server failed on `c`, its counters (none: not published). Takes them
// looked up already: a lookup may allocate, and this runs from close().
void Session::release_peer(bool failed, ServerCounters* c) noexcept {
  const event::TimePoint now = loop_.now();
  balancer_->release(*peer_, failed, now);
  if (c == nullptr) return;
  std::uint64_t word = 0;
  const conf::Server* server = peer_->server;
  if (server != nullptr && server->max_fails > 0 && peer_->fails >= server->max_fails) {
    using std::chrono::duration_cast;
    const auto wall =
        duration_cast<event::Msec>(std::chrono::system_clock::now().time_since_epoch());
    const auto until = wall + (Balancer::failed_until(*peer_) - now);
    word = passive_failure_word(duration_cast<std::chrono::seconds>(wall).count(),
                                (until.count() + 999) / 1000);
  }
  if (c->failed.load(std::memory_order_relaxed) != word) {
    c->failed.store(word, std::memory_order_relaxed);
  }
}

// The connect to `peer_` failed (refused, timed out): drop that socket, try the next server.
void Session::connect_failed(const char* why) {
  spdlog::warn("proxy \"{}\": connect to {} {}; trying the next server", proxy_.name, peer_->name,
               why);
  // In the TLS handshake (failed or timed out): the session offered may be what went wrong.
  if (upstream_->ssl != nullptr) tls::ClientContext::forget_session(upstream_->ssl);
  tls::release(*upstream_);
  loop_.close_connection(*upstream_);
  upstream_ = nullptr;
  failed_peer();
  connect_next();
}

void Session::connected_now() {
  loop_.del_timer(upstream_->write);
  phase_ = Phase::relaying;
  up_.set_to(upstream_);
  down_.set_from(upstream_);
  // The server's TLS handshake is its answer. Otherwise an unanswered Fast Open connect is
  // counted once answered: `sessions` are those connected to the server.
  if (upstream_->ssl != nullptr) fastopen_ = FastOpen::none;
  if (fastopen_ == FastOpen::none) count_server_session();
  // (Through TLS, the header went in clear before the handshake: send_header_in_clear().)
  if (proxy_.send_proxy_protocol != conf::ProxyProtocol::off && upstream_->ssl == nullptr) {
    prepend_header();
  }
}

void Session::count_server_session() {
  if ((peer_stats_ = shared_.server_stats(upstream_name(), *peer_)) != nullptr) {
    stat_add(peer_stats_->sessions);
    stat_add(peer_stats_->active);
  }
}

bool Session::fastopen_settle(AnswerCheck check) {
  const bool timed_out = check == AnswerCheck::timed_out;
  // The server's first byte or FIN is an answer; without one, the socket's state says whether
  // the handshake is done, asked only when it matters (a held FIN, a SYN-ACK's report, the
  // timer).
  bool answered = down_.total() > 0 || down_.state() != RelayDirection::State::open;
  if (!answered && (fin_held_ || check != AnswerCheck::after_run)) {
    tcp_info info{};
    socklen_t len = sizeof info;
    if (::getsockopt(upstream_->fd.get(), IPPROTO_TCP, TCP_INFO, &info, &len) == -1) {
      spdlog::warn("getsockopt(TCP_INFO) failed: {}", event::last_error().message());
      answered = true;  // nothing to wait for that can be seen
    } else if (info.tcpi_state == TCP_CLOSE) {
      // Refused or given up, its error not read yet: a failed connect, not an answer.
      int err = 0;
      len = sizeof err;
      if (::getsockopt(upstream_->fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) == -1) err = errno;
      reset(upstream_, err != 0 ? err : ECONNRESET);
      return false;
    } else {
      answered = info.tcpi_state != TCP_SYN_SENT;
    }
  }
  if (answered) {
    fastopen_ = FastOpen::none;
    loop_.del_timer(upstream_->write);
    count_server_session();
    if (peer_stats_ != nullptr) {  // what moved before the answer
      stat_add(peer_stats_->bytes_sent, up_.total());
      stat_add(peer_stats_->bytes_received, down_.total());
    }
    if (fin_held_) {
      fin_held_ = false;
      up_.pass_fin();
    }
    return true;
  }
  if (timed_out) {
    // The client's bytes went in the SYN: no next server can have them.
    spdlog::warn("proxy \"{}\": connect to {} timed out", proxy_.name, peer_->name);
    failed_peer();
    close(EndReason::connect_failed);
    return false;
  }
  // A send was made (bytes went, or wait for room): the SYN is out, with them or, where the
  // cookie went away since connect(), without.
  if (fastopen_ == FastOpen::unsent && (up_.total() > 0 || !up_.drained())) {
    fastopen_ = FastOpen::in_flight;
    loop_.add_timer(upstream_->write, proxy_.connect_timeout);
  }
  return true;
}

// The PROXY header for this session into `out` (kMaxEncoded bytes); its length.
std::size_t Session::encode_header(std::span<std::byte> out) {
  event::SocketAddress destination;
  if (aside_ && aside_->header_destination) {
    destination = *aside_->header_destination;
  } else if (::getsockname(client_->fd.get(), destination.get(), destination.length_ptr()) == -1) {
    spdlog::warn("getsockname() failed: {}", event::last_error().message());
    destination = event::SocketAddress();  // sent as UNKNOWN / UNSPEC
  }
  return proxy_protocol::encode(proxy_.send_proxy_protocol, client_->peer, destination, out);
}

// send_proxy_protocol: the header goes in front of anything already in the up direction (there
// is none: the relay reads the client only once connected), so it is what the server reads
// first.
void Session::prepend_header() {
  std::byte header[proxy_protocol::kMaxEncoded];
  const std::size_t n = encode_header(header);
  up_.prepend({header, n});
  header_out_ = static_cast<std::uint32_t>(n);
}

// Before the server's TLS handshake: the header in one send on the socket just connected (its
// buffer is empty, so a short send is not expected; one is a connect failure). Not counted as
// the client's bytes.
bool Session::send_header_in_clear() {
  std::byte header[proxy_protocol::kMaxEncoded];
  const std::size_t n = encode_header(header);
  const ssize_t sent =
      event::retry_eintr([&] { return ::send(upstream_->fd.get(), header, n, MSG_NOSIGNAL); });
  if (sent == static_cast<ssize_t>(n)) return true;
  const std::string why = "failed: sending the PROXY header: " +
                          (sent == -1 ? event::last_error().message() : std::string("short send"));
  connect_failed(why.c_str());
  return false;
}

void Session::on_upstream_event(Event& ev) {
  auto& s = *static_cast<Session*>(static_cast<Connection*>(ev.data)->data);
  if (s.phase_ == Phase::moving) return;  // out of the loop, or not started yet
  if (s.phase_ == Phase::connecting) {
    if (ev.timedout) {
      s.connect_failed(s.upstream_->ssl != nullptr ? "timed out in the TLS handshake"
                                                   : "timed out");
      return;
    }
    if (s.upstream_->ssl != nullptr) {  // connected; the server's TLS handshake is under way
      if (!s.upstream_handshake()) return;
      s.connected_now();
      s.run();
      return;
    }
    if (!ev.write) return;  // a read report before the connect completed
    // Writable without EPOLLERR: connected. With it, SO_ERROR says why not.
    int err = 0;
    socklen_t len = sizeof err;
    if (ev.error && ::getsockopt(s.upstream_->fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) == -1) {
      err = errno;
    }
    if (ev.error && err == 0) err = ECONNREFUSED;  // reported, then taken by a read: still failed
    if (err != 0) {
      const std::string why = "failed: " + std::system_category().message(err);
      s.connect_failed(why.c_str());
      return;
    }
    if (const tls::ClientContext* ctx = s.shared_.client_tls(s.upstream_name())) {
      // The PROXY header goes before the TLS, in clear, as HAProxy's send-proxy with ssl.
      if (s.proxy_.send_proxy_protocol != conf::ProxyProtocol::off && !s.send_header_in_clear()) {
        return;
      }
      if (!s.start_upstream_tls(*ctx)) return;
    }
    s.connected_now();
  } else if (ev.timedout) {  // the connect_timeout of an unanswered Fast Open connect
    ev.timedout = false;
    if (!s.fastopen_settle(AnswerCheck::timed_out)) return;
  } else if (ev.write && s.fastopen_ == FastOpen::in_flight) {
    if (!s.fastopen_settle(AnswerCheck::writable)) return;
  }
  s.run();
}

}  // namespace ferry::worker
