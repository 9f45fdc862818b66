// Tests of RelayDirection towards a TLS end, over real sockets and a real loop: the FIN of the
// plain side reaches the TLS peer as a close_notify, also when the socket is full at that moment.
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>

#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "event/event_loop.h"
#include "tests/support/loop_helpers.h"
#include "tests/support/process.h"
#include "tests/support/test_ca.h"
#include "tests/unit/worker/tls_pair.h"
#include "worker/proxy/relay_direction.h"
#include "worker/tls/server_context.h"
#include "worker/tls/tls_io.h"

namespace ferry::worker {
namespace {

using event::Connection;
using event::UniqueFd;
using Pumped = RelayDirection::Pumped;
using State = RelayDirection::State;

// How a TLS reader's stream ended.
enum class Ending : std::uint8_t { open, close_notify, cut };

// sender → [from] direction [to: TLS server] → receiver (a TLS client), on one loop.
struct TlsRig {
  static constexpr std::size_t kBufferSize = 16 * 1024;

  TlsRig() : ca(dir.path()) {
    EXPECT_FALSE(loop.init({.connections = 4, .epoll_events = 8}));
    auto [s, f] = test::socket_pair();
    auto [t, r] = test::socket_pair();
    sender = std::move(s);
    receiver = std::move(r);
    const test::Issued leaf = ca.issue("a", {"a.test"});
    conf::ServerTls settings;
    settings.certificates = {conf::CertificatePair{leaf.cert_path, leaf.key_path}};
    std::string error;
    server = tls::ServerContext::create(settings, tls::TicketKeys::create(), error);
    EXPECT_TRUE(server) << error;
    client_ctx = tls::client_ctx();
    client = tls::client_ssl(client_ctx.get(), r_fd(), "a.test");
    from = loop.get_connection(std::move(f));
    to = loop.get_connection(std::move(t));
    tls::attach(*to, server->new_ssl(to->fd.get()));
    for (Connection* c : {from, to}) {
      c->data = this;
      c->read.handler = c->write.handler = on_event;
      EXPECT_FALSE(loop.add_connection(*c));
    }
    direction = std::make_unique<RelayDirection>(resources, kBufferSize, false);
    direction->set_from(from);
    direction->set_to(to);
  }
  ~TlsRig() {
    direction.reset();
    tls::release(*to);
    for (Connection* c : {from, to}) loop.close_connection(*c);
  }
  int r_fd() const { return receiver.get(); }

  // Both ends' handshake, the server's through tls::handshake as a session runs it.
  bool handshake() {
    bool server_done = false, client_done = false;
    std::string why;
    for (int i = 0; i < 500 && !(server_done && client_done); ++i) {
      if (!client_done) {
        const int r = SSL_do_handshake(client.get());
        client_done = r == 1;
        if (r != 1 && SSL_get_error(client.get(), r) != SSL_ERROR_WANT_READ) return false;
      }
      if (!server_done) {
        to->read.ready = to->write.ready = true;
        const tls::HandshakeStatus s = tls::handshake(*to, why);
        if (s == tls::HandshakeStatus::failed) return false;
        server_done = s == tls::HandshakeStatus::done;
      }
      pollfd p[2] = {{r_fd(), POLLIN, 0}, {to->fd.get(), POLLIN, 0}};
      ::poll(p, 2, 10);
    }
    if (!(server_done && client_done)) return false;
    // The client reads what follows the handshake (TLS 1.3's tickets) behind one byte, so that
    // a test's first SSL_read takes a record of the test's.
    if (SSL_write(to->ssl, "h", 1) != 1) return false;
    char c = 0;
    for (int i = 0; i < 100 && SSL_read(client.get(), &c, 1) != 1; ++i) {
      pollfd p{r_fd(), POLLIN, 0};
      ::poll(&p, 1, 10);
    }
    to->read.ready = to->write.ready = true;  // as the loop's first report would say
    return c == 'h';
  }

  static void on_event(event::Event& ev) {
    auto& rig = *static_cast<TlsRig*>(static_cast<Connection*>(ev.data)->data);
    if (rig.failed) return;
    const Pumped p = rig.direction->pump();
    if (p == Pumped::finished) {
      ++rig.fins;
      rig.direction->pass_fin();
    }
    rig.failed = p == Pumped::failed;
  }

  // Reads what the client can; the stream's ending once it has one.
  Ending read_client() {
    char buf[4096];
    for (;;) {
      const int n = SSL_read(client.get(), buf, sizeof buf);
      if (n > 0) {
        received.append(buf, static_cast<std::size_t>(n));
        continue;
      }
      const int e = SSL_get_error(client.get(), n);
      ERR_clear_error();
      if (e == SSL_ERROR_WANT_READ) return Ending::open;
      return e == SSL_ERROR_ZERO_RETURN ? Ending::close_notify : Ending::cut;
    }
  }

  test::TempDir dir;
  test::TestCa ca;
  std::unique_ptr<tls::ServerContext> server;
  tls::SslCtxPtr client_ctx;
  tls::SslPtr client;
  event::EventLoop loop;
  BufferPool buffers;
  PipePool pipes;
  RelayResources resources{&loop, &buffers, &pipes};
  UniqueFd sender;
  UniqueFd receiver;
  Connection* from = nullptr;
  Connection* to = nullptr;
  std::unique_ptr<RelayDirection> direction;
  int fins = 0;
  bool failed = false;
  std::string received;
};

// The server's last record filled the socket just before its FIN arrived: the close_notify
// finds no room. It must wait for room and go before the FIN, or the client sees a stream cut
// short (a truncation attack, for all it knows).
TEST(RelayDirectionTlsTest, TheCloseNotifyWaitsForRoomBeforeTheFin) {
  TlsRig rig;
  ASSERT_TRUE(rig.handshake());
  // Fill the socket with records of one byte each until one does not fit (an AF_UNIX socket
  // takes a small write whole or not at all), then let the client read one record so that the
  // retried record fits: the socket is full again and OpenSSL holds nothing unsent — as after
  // the relay's last write of a stream.
  std::size_t written = 0;
  for (;;) {
    const int n = SSL_write(rig.to->ssl, "x", 1);
    if (n != 1) {
      ASSERT_EQ(SSL_get_error(rig.to->ssl, n), SSL_ERROR_WANT_WRITE);
      break;
    }
    ++written;
    ASSERT_LT(written, 100'000U) << "the socket never filled";
  }
  char c = 0;
  ASSERT_EQ(SSL_read(rig.client.get(), &c, 1), 1);
  ASSERT_EQ(SSL_write(rig.to->ssl, "x", 1), 1);
  ++written;
  rig.received.push_back(c);

  ASSERT_EQ(::shutdown(rig.sender.get(), SHUT_WR), 0);
  ASSERT_TRUE(test::run_until(rig.loop, [&] { return rig.direction->state() != State::open; }));
  EXPECT_EQ(rig.direction->state(), State::closing);
  EXPECT_EQ(rig.fins, 0);

  // The client reads: room comes, the close_notify goes, then the FIN.
  Ending ending = Ending::open;
  ASSERT_TRUE(test::run_until(rig.loop, [&] {
    ending = rig.read_client();
    return ending != Ending::open;
  }));
  EXPECT_EQ(ending, Ending::close_notify);
  EXPECT_EQ(rig.received, std::string(written, 'x'));
  EXPECT_EQ(rig.direction->state(), State::finished);
  EXPECT_EQ(rig.fins, 1);
  EXPECT_FALSE(rig.failed);
}

// Bytes, then the FIN, with room to spare: every byte, then a close_notify.
TEST(RelayDirectionTlsTest, BytesThenACloseNotify) {
  TlsRig rig;
  ASSERT_TRUE(rig.handshake());
  const std::string data(100'000, 'd');
  ASSERT_EQ(::send(rig.sender.get(), data.data(), 50'000, 0), 50'000);
  Ending ending = Ending::open;
  ASSERT_TRUE(test::run_until(rig.loop, [&] {
    ending = rig.read_client();
    return rig.received.size() == 50'000 || ending != Ending::open;
  }));
  ASSERT_EQ(::send(rig.sender.get(), data.data(), 50'000, 0), 50'000);
  ASSERT_EQ(::shutdown(rig.sender.get(), SHUT_WR), 0);
  ASSERT_TRUE(test::run_until(rig.loop, [&] {
    ending = rig.read_client();
    return ending != Ending::open;
  }));
  EXPECT_EQ(ending, Ending::close_notify);
  EXPECT_EQ(rig.received, data);
  EXPECT_EQ(rig.fins, 1);
}

}  // namespace
}  // namespace ferry::worker
