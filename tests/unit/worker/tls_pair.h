// For the TLS context tests: a client and a server SSL on the two ends of a socketpair, driven
// through the handshake (and a little data) in one thread, and a plain OpenSSL client context
// to play the clients ferry must accept or refuse.
#pragma once

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <tuple>

#include "worker/tls/server_context.h"

namespace ferry::worker::tls {

// Both ends' outcome: "" = the handshake completed, else OpenSSL's reason.
struct Outcome {
  std::string client;
  std::string server;
  [[nodiscard]] bool ok() const { return client.empty() && server.empty(); }
};

inline std::string ssl_failure(SSL* ssl, int ret) {
  const int e = SSL_get_error(ssl, ret);
  char buf[256] = "";
  ERR_error_string_n(ERR_peek_error(), buf, sizeof buf);
  ERR_clear_error();
  return "SSL_get_error " + std::to_string(e) + ": " + buf;
}

class TlsPair {
 public:
  TlsPair() {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0) {
      client_fd = fds[0];
      server_fd = fds[1];
    }
  }
  ~TlsPair() {
    client.reset();
    server.reset();
    if (client_fd >= 0) ::close(client_fd);
    if (server_fd >= 0) ::close(server_fd);
  }
  TlsPair(const TlsPair&) = delete;
  TlsPair& operator=(const TlsPair&) = delete;

  // Runs `step` on both sides until each has finished (1) or failed, or nothing moves.
  template <typename Step>
  Outcome drive(Step&& step) {
    Outcome out;
    bool client_done = false, server_done = false;
    for (int idle = 0; idle < 50 && !(client_done && server_done);) {
      bool moved = false;
      for (auto [ssl, done, error] : {std::tuple{client.get(), &client_done, &out.client},
                                      std::tuple{server.get(), &server_done, &out.server}}) {
        if (*done) continue;
        const int r = step(ssl);
        const int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) continue;
        *done = moved = true;
        if (r != 1) *error = ssl_failure(ssl, r);
      }
      // The other end fails too once the failing one's alert is read; waits a little for it.
      if (!moved) {
        pollfd p[2] = {{client_fd, POLLIN, 0}, {server_fd, POLLIN, 0}};
        if (::poll(p, 2, 20) == 0) ++idle;
      }
    }
    if (!client_done && out.client.empty()) out.client = "did not finish";
    if (!server_done && out.server.empty()) out.server = "did not finish";
    return out;
  }

  Outcome handshake() {
    return drive([](SSL* s) { return SSL_do_handshake(s); });
  }

  // After a handshake: one byte from the server to the client, which then has read the
  // server's post-handshake messages (TLS 1.3's session tickets). True when it arrived.
  bool server_says_hello() {
    if (SSL_write(server.get(), "x", 1) != 1) return false;
    char c = 0;
    for (int i = 0; i < 100; ++i) {
      if (SSL_read(client.get(), &c, 1) == 1) return c == 'x';
      pollfd p{client_fd, POLLIN, 0};
      ::poll(&p, 1, 10);
    }
    return false;
  }

  int client_fd = -1;
  int server_fd = -1;
  SslPtr client;
  SslPtr server;
};

// A client context as the tests' clients need: versions, trusting `ca` when not "".
inline SslCtxPtr client_ctx(int min_version = TLS1_2_VERSION, int max_version = TLS1_3_VERSION,
                            const std::string& ca = "") {
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  SSL_CTX_set_min_proto_version(ctx.get(), min_version);
  SSL_CTX_set_max_proto_version(ctx.get(), max_version);
  if (!ca.empty()) {
    SSL_CTX_load_verify_locations(ctx.get(), ca.c_str(), nullptr);
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  }
  return ctx;
}

// A client SSL of `ctx` on the pair's client end, sending `sni` when not "".
inline SslPtr client_ssl(SSL_CTX* ctx, int fd, const std::string& sni = "") {
  SslPtr ssl(SSL_new(ctx));
  SSL_set_fd(ssl.get(), fd);
  if (!sni.empty()) SSL_set_tlsext_host_name(ssl.get(), sni.c_str());
  SSL_set_connect_state(ssl.get());
  return ssl;
}

// The CN of the certificate the peer of `ssl` presented, "" for none.
inline std::string peer_cn(SSL* ssl) {
  X509* peer = SSL_get0_peer_certificate(ssl);
  if (peer == nullptr) return "";
  char cn[256] = "";
  X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof cn);
  return cn;
}

// EVP_PKEY_EC or EVP_PKEY_RSA: the type of the peer's certificate key.
inline int peer_key_type(SSL* ssl) {
  X509* peer = SSL_get0_peer_certificate(ssl);
  return peer == nullptr ? 0 : EVP_PKEY_get_base_id(X509_get0_pubkey(peer));
}

}  // namespace ferry::worker::tls
