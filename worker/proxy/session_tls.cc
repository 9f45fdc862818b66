// Session's TLS: the handshake with the client when the proxy terminates TLS (then the relay
// reads and writes the client through OpenSSL), and with the server when its upstream
// originates TLS, whose failure is a connect failure (the next server is tried).
#include <openssl/ssl.h>

#include <string>

#include <spdlog/spdlog.h>

#include "worker/proxy/session.h"
#include "worker/tls/tls_io.h"

namespace ferry::worker {

namespace {

// "host" of "host:port" or "[v6]:port" (the whole text when there is no port).
std::string_view host_of(std::string_view text) noexcept {
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    return close == std::string_view::npos ? text : text.substr(1, close - 1);
  }
  const auto colon = text.rfind(':');
  return colon == std::string_view::npos || text.find(':') != colon ? text : text.substr(0, colon);
}

}  // namespace

void Session::start_client_tls() {
  const tls::ServerContext* ctx = shared_.server_tls(proxy_);
  SSL* ssl = ctx != nullptr ? ctx->new_ssl(client_->fd.get()) : nullptr;
  if (ssl == nullptr) {
    spdlog::error("proxy \"{}\": no TLS for client {}: {}", proxy_.name, client_->peer.to_string(),
                  ctx == nullptr ? "no context" : tls::take_error("SSL_new failed"));
    close(EndReason::tls_handshake_failed);
    return;
  }
  tls::attach(*client_, ssl);
  phase_ = Phase::handshaking;
  loop_.add_timer(client_->read, proxy_.tls->handshake_timeout);
  // The ClientHello may be in already (the accept came with it): no need to wait for a report.
  client_->read.ready = true;
  client_handshake();
}

void Session::client_handshake() {
  std::string why;
  switch (tls::handshake(*client_, why)) {
    case tls::HandshakeStatus::again: return;
    case tls::HandshakeStatus::failed:
      if (auto held = shared_.throttles().bad_hello.admit(loop_.now())) {
        spdlog::info(
            "proxy \"{}\": TLS handshake with {} failed: {} ({} more since the last "
            "message)",
            proxy_.name, client_->peer.to_string(), why, *held);
      }
      close(EndReason::tls_handshake_failed);
      return;
    case tls::HandshakeStatus::done: break;
  }
  loop_.del_timer(client_->read);
  Aside& a = aside();
  a.tls_version = tls::ServerContext::version(client_->ssl);
  a.client_subject = tls::ServerContext::client_subject(client_->ssl);
  // A client gone with its handshake (a TLS health check, a probe, `openssl s_time`: it closed
  // at once and reset when the session tickets reached it) has nothing for a server and can read
  // nothing from one: no server connection is opened for it (HAProxy neither), or the one being
  // opened is abandoned when the reset comes later (a round trip after the tickets, over a
  // network). A stream that only ended (a half-close) goes on: the client may wait for what a
  // server says first.
  switch (tls::peek(*client_).status) {
    case event::IoStatus::error: close(EndReason::client_reset); return;
    case event::IoStatus::eof:
      a.ended_with_handshake = true;
      if (client_gone()) return;
      client_->read.ready = true;  // the relay reads the end again and passes it on
      break;
    case event::IoStatus::ok: client_->read.ready = true; break;  // the bytes wait in OpenSSL
    case event::IoStatus::again: break;  // the socket is drained: its next bytes bring an event
  }
  connect_next();
}

bool Session::client_gone() {
  if (!aside_ || !aside_->ended_with_handshake || !event::peer_gone(client_->fd.get())) {
    return false;
  }
  // It reads nothing more: no close_notify for it.
  SSL_set_shutdown(client_->ssl, SSL_get_shutdown(client_->ssl) | SSL_SENT_SHUTDOWN);
  close(EndReason::closed);
  return true;
}

bool Session::start_upstream_tls(const tls::ClientContext& ctx) {
  // The name to verify (the upstream's server_name overrides it): the server's address as
  // written (as configured or added at run time) — a host name, or a literal address verified as
  // an IP. Not an SRV record's target: it comes from unauthenticated DNS, and whoever forges the
  // answer could name a host of theirs with a valid certificate (RFC 6125 6.2.1); an SRV server
  // without server_name is verified by its IP, which fails closed.
  const std::string_view host = peer_->server != nullptr && peer_->server->service.empty()
                                    ? host_of(peer_->server->address.text)
                                    : std::string_view();
  const std::string address = upstream_->peer.to_string();
  // The session cache is the peer's: peers outlive the sessions on them (Balancer::peers_).
  SSL* ssl = ctx.new_ssl(upstream_->fd.get(), host, host_of(address), &peer_->tls_session);
  if (ssl == nullptr) {
    // No fault of the server (memory here): not counted against it, nor another one tried.
    spdlog::error("proxy \"{}\": no TLS for server {}: {}", proxy_.name, peer_->name,
                  tls::take_error("SSL_new failed"));
    balancer_->abandon(*peer_);
    peer_ = nullptr;
    close(EndReason::connect_failed);
    return false;
  }
  tls::attach(*upstream_, ssl);
  upstream_->read.ready = upstream_->write.ready = true;
  return upstream_handshake();
}

bool Session::upstream_handshake() {
  std::string why;
  switch (tls::handshake(*upstream_, why)) {
    case tls::HandshakeStatus::again: return false;
    case tls::HandshakeStatus::failed: {
      if (SSL_get_verify_result(upstream_->ssl) != X509_V_OK) {
        why = tls::ClientContext::verify_error(upstream_->ssl);
      }
      const std::string text = "failed: TLS handshake: " + why;
      connect_failed(text.c_str());
      return false;
    }
    case tls::HandshakeStatus::done: break;
  }
  upstream_->read.ready = true;
  return true;
}

}  // namespace ferry::worker
