// Tests of event/connection_io under edge-triggered epoll: a handler that reads until EAGAIN
// misses nothing, and the ready/eof flags tell it when to stop.
#include "event/connection_io.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <numeric>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "event/event_loop.h"
#include "tests/support/loop_helpers.h"

namespace ferry::event {
namespace {

struct Sink {
  std::vector<std::byte> received;
  int wakeups = 0;
  bool saw_eof = false;
};

// Reads until EAGAIN, as every edge-triggered handler must: a single recv per wake-up would
// leave bytes in the socket that no further edge announces.
void drain(Event& ev) {
  auto& c = *static_cast<Connection*>(ev.data);
  auto& sink = *static_cast<Sink*>(c.data);
  ++sink.wakeups;
  std::byte buf[4096];
  for (;;) {
    const IoResult r = recv(c, buf);
    if (r.status == IoStatus::ok) {
      sink.received.insert(sink.received.end(), buf, buf + r.bytes);
      continue;
    }
    if (r.status == IoStatus::eof) sink.saw_eof = true;
    EXPECT_NE(r.status, IoStatus::error) << r.err;
    break;
  }
  EXPECT_FALSE(ev.ready) << "recv must clear ready when the socket is drained";
}

std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = std::byte((i * 131 + seed) & 0xff);
  return v;
}

TEST(ConnectionIoTest, EdgeTriggeredReadsUntilEagainMissNothing) {
  EventLoop loop;
  ASSERT_FALSE(loop.init({.connections = 4, .epoll_events = 8}));
  auto [fd, peer] = test::socket_pair();
  int size = 1 << 20;
  ASSERT_EQ(::setsockopt(peer.get(), SOL_SOCKET, SO_SNDBUF, &size, sizeof size), 0);
  Sink sink;
  Connection* c = loop.get_connection(std::move(fd));
  ASSERT_NE(c, nullptr);
  c->data = &sink;
  c->read.handler = drain;
  c->write.handler = [](Event&) {};
  ASSERT_FALSE(loop.add_connection(*c));

  // Three bursts, each many times the handler's 4 KiB buffer: every burst must arrive whole
  // on the wake-up it causes.
  std::vector<std::byte> sent;
  for (unsigned burst = 0; burst < 3; ++burst) {
    const auto chunk = pattern(100'000 + burst * 7'001, burst);
    std::size_t off = 0;
    while (off < chunk.size()) {
      const ssize_t n = ::send(peer.get(), chunk.data() + off, chunk.size() - off, 0);
      if (n > 0) {
        off += static_cast<std::size_t>(n);
      } else {
        ASSERT_EQ(errno, EAGAIN);
        ASSERT_TRUE(
            test::run_until(loop, [&] { return sink.received.size() >= sent.size() + off; }));
      }
    }
    sent.insert(sent.end(), chunk.begin(), chunk.end());
    ASSERT_TRUE(test::run_until(loop, [&] { return sink.received.size() == sent.size(); }))
        << "received " << sink.received.size() << " of " << sent.size();
  }
  EXPECT_EQ(sink.received, sent);

  peer.reset();
  ASSERT_TRUE(test::run_until(loop, [&] { return sink.saw_eof; }));
  EXPECT_TRUE(c->read.eof);
  loop.close_connection(*c);
}

// Short reads: one that drains the socket clears `ready` (no recv just to hear EAGAIN), and one
// after EPOLLRDHUP also sets `eof` (no recv just to hear 0). A full read leaves both alone.
TEST(ConnectionIoTest, AShortReadEndsReadinessAndAfterRdhupMeansEof) {
  EventLoop loop;
  ASSERT_FALSE(loop.init({.connections = 2, .epoll_events = 8}));
  auto [fd, peer] = test::socket_pair();
  Connection* c = loop.get_connection(std::move(fd));
  ASSERT_NE(c, nullptr);
  struct Seen {
    std::vector<IoResult> results;
    bool eof_after_first = false;
  } seen;
  c->data = &seen;
  c->read.handler = [](Event& ev) {
    auto& conn = *static_cast<Connection*>(ev.data);
    auto& s = *static_cast<Seen*>(conn.data);
    std::byte buf[4];
    while (ev.ready && !ev.eof) {
      s.results.push_back(recv(conn, buf));
      if (s.results.size() == 1) s.eof_after_first = ev.eof;
    }
  };
  c->write.handler = [](Event&) {};
  ASSERT_FALSE(loop.add_connection(*c));

  ASSERT_EQ(::send(peer.get(), "abcdef", 6, 0), 6);
  ASSERT_EQ(::shutdown(peer.get(), SHUT_WR), 0);
  ASSERT_TRUE(test::run_until(loop, [&] { return c->read.eof; }));
  // 4 bytes fill the buffer (readiness stays), 2 are a short read after the FIN: two calls.
  ASSERT_EQ(seen.results.size(), 2U);
  EXPECT_FALSE(seen.eof_after_first);
  EXPECT_EQ(seen.results[0].bytes, 4U);
  EXPECT_EQ(seen.results[1].status, IoStatus::ok);
  EXPECT_EQ(seen.results[1].bytes, 2U);
  EXPECT_FALSE(c->read.ready);
  loop.close_connection(*c);
}

// A reset behind the last bytes (EPOLLERR with EPOLLRDHUP) is an error, not the FIN of a
// complete stream: the short read infers no EOF and the next recv() reports ECONNRESET.
TEST(ConnectionIoTest, AResetBehindTheBytesIsAnErrorNotAnEof) {
  EventLoop loop;
  ASSERT_FALSE(loop.init({.connections = 2, .epoll_events = 8}));
  auto [peer, fd] = test::tcp_pair();  // TCP: only TCP resets
  ASSERT_EQ(::send(peer.get(), "abcdef", 6, 0), 6);
  const linger abort{1, 0};
  ASSERT_EQ(::setsockopt(peer.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort), 0);
  peer.reset();
  // Both have arrived before the loop first looks.
  pollfd p{fd.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1);
  ASSERT_NE(p.revents & POLLERR, 0);

  Connection* c = loop.get_connection(std::move(fd));
  ASSERT_NE(c, nullptr);
  std::vector<IoResult> results;
  c->data = &results;
  c->read.handler = [](Event& ev) {
    auto& conn = *static_cast<Connection*>(ev.data);
    auto& r = *static_cast<std::vector<IoResult>*>(conn.data);
    std::byte buf[4];
    while (ev.ready && !ev.eof && (r.empty() || r.back().status == IoStatus::ok)) {
      r.push_back(recv(conn, buf));
    }
  };
  c->write.handler = [](Event&) {};
  ASSERT_FALSE(loop.add_connection(*c));
  ASSERT_TRUE(test::run_until(loop, [&] {
    return c->read.eof || (!results.empty() && results.back().status != IoStatus::ok);
  }));
  EXPECT_FALSE(c->read.eof) << "a reset is not an EOF";
  ASSERT_FALSE(results.empty());
  EXPECT_EQ(results.back().status, IoStatus::error);
  EXPECT_EQ(results.back().err, ECONNRESET);
  std::size_t bytes = 0;
  for (const auto& r : results) bytes += r.bytes;
  EXPECT_LE(bytes, 6U);
  loop.close_connection(*c);
}

TEST(ConnectionIoTest, SendReportsAgainWhenTheSocketBufferIsFull) {
  EventLoop loop;
  ASSERT_FALSE(loop.init({.connections = 2, .epoll_events = 8}));
  auto [fd, peer] = test::socket_pair();
  Connection* c = loop.get_connection(std::move(fd));
  ASSERT_NE(c, nullptr);
  c->write.ready = true;
  const auto block = pattern(65536, 1);
  IoResult r{IoStatus::ok};
  std::size_t total = 0;
  for (int i = 0; i < 1000 && r.status == IoStatus::ok; ++i) {
    r = send(*c, block);
    total += r.bytes;
  }
  EXPECT_EQ(r.status, IoStatus::again);
  EXPECT_FALSE(c->write.ready);
  EXPECT_GT(total, 0U);
  loop.close_connection(*c);
}

// The relay's path after a failed io_uring submit: the cancelled result goes through
// recv_done()/send_done(), then the call is made directly. When that call fills the whole
// buffer (or writes everything) it leaves the flags alone, so the cancelled result must not
// have cleared them: under EPOLLET the bytes still queued bring no new report, and a send that
// never met EAGAIN brings no EPOLLOUT.
TEST(ConnectionIoTest, ACancelledBatchResultLeavesReadinessForTheDirectCall) {
  EventLoop loop;
  ASSERT_FALSE(loop.init({.connections = 2, .epoll_events = 8}));
  auto [fd, peer] = test::socket_pair();
  Connection* c = loop.get_connection(std::move(fd));
  ASSERT_NE(c, nullptr);
  const auto data = pattern(1024, 3);
  ASSERT_EQ(::send(peer.get(), data.data(), data.size(), 0), ssize_t(data.size()));
  c->read.ready = c->write.ready = true;

  std::byte buf[512];  // smaller than what is queued: the direct recv fills it
  IoResult r = recv_done(*c, -ECANCELED, sizeof buf);
  EXPECT_EQ(r.status, IoStatus::error);
  EXPECT_EQ(r.err, ECANCELED);
  r = recv(*c, buf);
  ASSERT_EQ(r.status, IoStatus::ok);
  EXPECT_EQ(r.bytes, sizeof buf);
  EXPECT_TRUE(c->read.ready) << "bytes are still queued but nothing will report them";
  EXPECT_FALSE(c->read.error);

  r = send_done(*c, -ECANCELED, data.size());
  EXPECT_EQ(r.status, IoStatus::error);
  EXPECT_EQ(r.err, ECANCELED);
  r = send(*c, data);
  ASSERT_EQ(r.status, IoStatus::ok);
  EXPECT_EQ(r.bytes, data.size());
  EXPECT_TRUE(c->write.ready) << "the socket takes more but no EPOLLOUT will say so";
  EXPECT_FALSE(c->write.error);
  loop.close_connection(*c);
}

}  // namespace
}  // namespace ferry::event
