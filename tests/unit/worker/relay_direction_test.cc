// Tests of RelayDirection over real sockets, driven by a real edge-triggered loop: bytes go
// through in order (buffers, splice, batched io_uring calls), the FIN follows the last byte, a
// peer that stops reading stops the reads, and a reset is reported with its side and errno.
#include "worker/proxy/relay_direction.h"

#include <linux/sockios.h>  // SIOCOUTQNSD
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "event/event_loop.h"
#include "event/io_batch.h"
#include "tests/support/loop_helpers.h"

namespace ferry::worker {
namespace {

using event::Connection;
using event::UniqueFd;
using Pumped = RelayDirection::Pumped;
using State = RelayDirection::State;

void set_buffer(int fd, int option, int bytes) {
  EXPECT_EQ(::setsockopt(fd, SOL_SOCKET, option, &bytes, sizeof bytes), 0);
}

std::vector<std::byte> pattern(std::size_t n) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = std::byte((i * 131 + i / 4093) & 0xff);
  return v;
}

enum class Mode { buffers, splice, io_uring };

// sender → [from] direction [to] → receiver, on one loop. Every event of either end pumps the
// direction, as a session's handlers do; a failure stops it (a session would close).
struct Rig {
  static constexpr std::size_t kBufferSize = 16 * 1024;

  explicit Rig(Mode mode, bool tcp = false) {
    EXPECT_FALSE(loop.init({.connections = 4, .epoll_events = 8}));
    if (mode == Mode::io_uring) {
      if (!batch.init(8, RelayDirection::on_batch_done)) return;
      loop.set_batch(&batch, 0);  // every call batched, however few events a wake-up brings
    }
    auto [s, f] = tcp ? test::tcp_pair() : test::socket_pair();
    auto [t, r] = tcp ? test::tcp_pair() : test::socket_pair();
    sender = std::move(s);
    receiver = std::move(r);
    from = loop.get_connection(std::move(f));
    to = loop.get_connection(std::move(t));
    for (Connection* c : {from, to}) {
      c->data = this;
      c->read.handler = c->write.handler = on_event;
      EXPECT_FALSE(loop.add_connection(*c));
    }
    direction = std::make_unique<RelayDirection>(resources, kBufferSize, mode == Mode::splice);
    direction->set_from(from);
    direction->set_to(to);
    ready = true;
  }
  ~Rig() {
    direction.reset();  // before the connections: it cancels what it queued on them
    for (Connection* c : {from, to}) {
      if (c != nullptr) loop.close_connection(*c);
    }
    if (batch.pending() > 0) batch.flush();  // the closes queued on it
  }

  static void on_event(event::Event& ev) {
    auto& rig = *static_cast<Rig*>(static_cast<Connection*>(ev.data)->data);
    if (rig.failed) return;
    const Pumped p = rig.direction->pump();
    rig.saw_splicing = rig.saw_splicing || rig.direction->splicing();
    if (p == Pumped::finished) {
      ++rig.fins;
      rig.direction->pass_fin();
    }
    rig.failed = p == Pumped::failed;
  }

  // Sends what the sender's socket takes of `data` from `*sent` on; false on EAGAIN.
  bool feed(const std::vector<std::byte>& data, std::size_t* sent) {
    if (*sent == data.size()) return true;
    const ssize_t n = ::send(sender.get(), data.data() + *sent, data.size() - *sent, 0);
    if (n > 0) *sent += static_cast<std::size_t>(n);
    EXPECT_TRUE(n > 0 || errno == EAGAIN) << std::strerror(errno);
    return n > 0;
  }
  // Sends what the sender takes and reads what reached the receiver: one step of run_until.
  // True once the receiver has `want` bytes.
  bool exchange(const std::vector<std::byte>& data, std::size_t* sent, std::size_t want) {
    while (feed(data, sent) && *sent < data.size()) {
    }
    drain();
    return received.size() == want;
  }
  // The receiver reads up to `n` bytes, once.
  void take(std::size_t n) {
    std::vector<std::byte> buf(n);
    const ssize_t got = ::recv(receiver.get(), buf.data(), n, MSG_DONTWAIT);
    if (got > 0) received.insert(received.end(), buf.begin(), buf.begin() + got);
  }
  // Takes what has reached the receiver; true once it read the FIN.
  bool drain() {
    std::byte buf[64 * 1024];
    for (;;) {
      const ssize_t n = ::recv(receiver.get(), buf, sizeof buf, 0);
      if (n > 0) {
        received.insert(received.end(), buf, buf + n);
        continue;
      }
      if (n == 0) return receiver_eof = true;
      EXPECT_EQ(errno, EAGAIN) << std::strerror(errno);
      return false;
    }
  }

  event::EventLoop loop;
  event::IoBatch batch;
  BufferPool buffers;
  PipePool pipes;
  RelayResources resources{&loop, &buffers, &pipes};
  UniqueFd sender;
  UniqueFd receiver;
  Connection* from = nullptr;
  Connection* to = nullptr;
  std::unique_ptr<RelayDirection> direction;
  bool ready = false;  // io_uring mode without io_uring: the test is skipped
  int fins = 0;
  bool failed = false;
  bool saw_splicing = false;
  bool receiver_eof = false;
  std::vector<std::byte> received;
};

class RelayDirectionTest : public ::testing::TestWithParam<Mode> {};

#define SKIP_WITHOUT_IO_URING(rig) \
  if (!(rig).ready) GTEST_SKIP() << "io_uring is not available here"

// Many buffers' worth goes through whole and in order while both ends take turns being full,
// and the FIN arrives once, after the last byte.
TEST_P(RelayDirectionTest, BytesGoThroughInOrderThenTheFin) {
  Rig rig(GetParam());
  SKIP_WITHOUT_IO_URING(rig);
  const auto data = pattern(3 * 1024 * 1024 + 17);
  std::size_t sent = 0;
  ASSERT_TRUE(test::run_until(rig.loop, [&] { return rig.exchange(data, &sent, data.size()); }))
      << "received " << rig.received.size() << " of " << data.size();
  EXPECT_EQ(rig.received, data);
  EXPECT_EQ(rig.direction->total(), data.size());
  EXPECT_EQ(rig.fins, 0);
  EXPECT_EQ(rig.direction->state(), State::open);

  ASSERT_EQ(::shutdown(rig.sender.get(), SHUT_WR), 0);
  ASSERT_TRUE(test::run_until(rig.loop, [&] { return rig.drain(); }));
  EXPECT_EQ(rig.received.size(), data.size());
  EXPECT_EQ(rig.direction->state(), State::finished);
  EXPECT_EQ(rig.fins, 1);
  EXPECT_FALSE(rig.failed);
  EXPECT_EQ(rig.direction->held(), 0U);
  if (GetParam() == Mode::splice) {
    EXPECT_TRUE(rig.saw_splicing);
  }
  if (GetParam() == Mode::io_uring) {
    EXPECT_GT(rig.batch.completed(), 0U);
  }
}

// The sender's FIN is read while the receiver is full: the direction holds it back (draining)
// until the bytes read before it are out, then passes it on, once.
TEST_P(RelayDirectionTest, TheFinWaitsForTheBufferToDrain) {
  Rig rig(GetParam());
  SKIP_WITHOUT_IO_URING(rig);
  set_buffer(rig.to->fd.get(), SO_SNDBUF, 4096);  // the kernel's minimum: the receiver fills
  // Less than one buffer, and the FIN behind it: one read takes both.
  const auto data = pattern(Rig::kBufferSize - 1000);
  std::size_t sent = 0;
  ASSERT_TRUE(rig.feed(data, &sent));
  ASSERT_EQ(sent, data.size());
  ASSERT_EQ(::shutdown(rig.sender.get(), SHUT_WR), 0);
  ASSERT_TRUE(test::run_until(rig.loop, [&] { return rig.direction->state() != State::open; }));
  EXPECT_EQ(rig.direction->state(), State::draining);
  EXPECT_GT(rig.direction->held(), 0U);
  EXPECT_EQ(rig.fins, 0);

  // The receiver reads: what was held goes out, then the FIN.
  ASSERT_TRUE(test::run_until(rig.loop, [&] {
    const bool eof = rig.drain();
    EXPECT_TRUE(!eof || rig.received.size() == data.size()) << "a FIN before the last byte";
    return eof;
  }));
  EXPECT_EQ(rig.received, data);
  EXPECT_EQ(rig.direction->state(), State::finished);
  EXPECT_EQ(rig.fins, 1);
}

// A session moving to another worker: its direction, settled mid-stream while the receiver is
// full (a splice pipe or a batched call holding bytes), then exported and imported into a new
// direction over the same sockets, loses, repeats and reorders nothing.
TEST_P(RelayDirectionTest, ASettledDirectionMovesWithEveryByte) {
  Rig rig(GetParam(), true);  // TCP: splice takes from it into a pipe
  SKIP_WITHOUT_IO_URING(rig);
  set_buffer(rig.to->fd.get(), SO_SNDBUF, 4096);
  const auto data = pattern(2 * 1024 * 1024 + 5);
  std::size_t sent = 0;
  // Until the sender's socket is full too: the direction holds what the receiver does not take.
  // In splice mode, settled with more bytes in the pipe than the buffer holds (a splice moves
  // up to the pipe's 64 KiB), which settle() must read back into a grown buffer. While the
  // pipeful is smaller, the receiver takes a little (8 KiB): the pipe empties a little at a
  // time, and the next splice, from a socket holding plenty, fills it.
  ASSERT_TRUE(test::run_until(rig.loop, [&] {
    rig.feed(data, &sent);
    const bool full = rig.direction->held() > 0 && !rig.to->write.ready;
    if (GetParam() != Mode::splice) return full;
    if (full && rig.direction->in_pipe() > Rig::kBufferSize) return true;
    if (full) rig.take(8 * 1024);
    return false;
  }));
  if (GetParam() == Mode::io_uring) {
    // A batched send that completed, its event posted and not yet run: settle() takes its
    // result (the bytes it sent are not held any more).
    rig.drain();
    rig.to->write.ready = true;
    EXPECT_EQ(rig.direction->pump(), Pumped::waiting);
    ASSERT_GT(rig.batch.pending(), 0U);
    rig.batch.flush();
  }
  ASSERT_TRUE(rig.direction->settle());
  const std::uint64_t total = rig.direction->total();
  const std::size_t held = rig.direction->held();
  DirectionRecord record;
  rig.direction->export_to(record);
  EXPECT_EQ(record.held.size(), held) << "a pipe's bytes are in the buffer once settled";
  EXPECT_EQ(record.total, total);
  EXPECT_EQ(record.state, static_cast<std::uint8_t>(State::open));

  auto moved =
      std::make_unique<RelayDirection>(rig.resources, Rig::kBufferSize, GetParam() == Mode::splice);
  moved->set_from(rig.from);
  moved->set_to(rig.to);
  moved->import_from(record);
  EXPECT_EQ(moved->total(), total);
  EXPECT_EQ(moved->held(), held);

  rig.direction = std::move(moved);
  rig.from->read.ready = rig.to->write.ready = true;
  rig.loop.post(rig.from->read);

  ASSERT_TRUE(test::run_until(rig.loop, [&] { return rig.exchange(data, &sent, data.size()); }))
      << "received " << rig.received.size() << " of " << data.size();
  EXPECT_EQ(rig.received, data);
  EXPECT_EQ(rig.direction->total(), data.size());
  EXPECT_FALSE(rig.failed);
}

// A receiver that stops reading stops the direction's reads (it holds at most a buffer), so the
// sender's socket fills and its sends block: nothing piles up in the relay. Everything arrives
// once the receiver reads again.
TEST_P(RelayDirectionTest, AFullReceiverAppliesBackPressure) {
  Rig rig(GetParam());
  SKIP_WITHOUT_IO_URING(rig);
  set_buffer(rig.to->fd.get(), SO_SNDBUF, 4096);
  set_buffer(rig.sender.get(), SO_SNDBUF, 64 * 1024);
  const auto data = pattern(16 * 1024 * 1024);  // far more than the sockets and the buffer hold
  std::size_t sent = 0;
  // Stalled: three loop iterations in a row in which the sender was refused and nothing moved.
  std::uint64_t last_total = 0;
  std::size_t last_sent = 0;
  int stalls = 0;
  ASSERT_TRUE(test::run_until(rig.loop, [&] {
    while (rig.feed(data, &sent) && sent < data.size()) {
    }
    const bool still = rig.direction->total() == last_total && sent == last_sent;
    stalls = still ? stalls + 1 : 0;
    last_total = rig.direction->total();
    last_sent = sent;
    return stalls >= 3;
  }));
  EXPECT_LT(sent, data.size() / 4) << "the relay kept reading from a sender nobody reads";
  EXPECT_GT(rig.direction->held(), 0U);
  // A splice moves up to a pipe's 64 KiB (the kernel's pipe, not a buffer of the worker's).
  EXPECT_LE(rig.direction->held(), GetParam() == Mode::splice ? 64 * 1024 : Rig::kBufferSize);
  EXPECT_LT(rig.direction->total(), sent);

  ASSERT_TRUE(test::run_until(rig.loop, [&] { return rig.exchange(data, &sent, data.size()); }))
      << "received " << rig.received.size() << " of " << data.size();
  EXPECT_EQ(rig.received, data);
  EXPECT_FALSE(rig.failed);
}

// A reset from the sender is reported as the sender's, with its errno; the direction does not
// close anything itself (the session decides).
TEST_P(RelayDirectionTest, AResetOfTheSenderIsReported) {
  Rig rig(GetParam(), /*tcp=*/true);
  SKIP_WITHOUT_IO_URING(rig);
  const auto data = pattern(1000);
  std::size_t sent = 0;
  ASSERT_TRUE(rig.feed(data, &sent));
  ASSERT_TRUE(test::run_until(rig.loop, [&] { return rig.exchange(data, &sent, data.size()); }));
  const linger abort{1, 0};
  ASSERT_EQ(::setsockopt(rig.sender.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort), 0);
  rig.sender.reset();
  ASSERT_TRUE(test::run_until(rig.loop, [&] { return rig.failed; }));
  EXPECT_EQ(rig.direction->failed_side(), rig.from);
  EXPECT_EQ(rig.direction->error(), ECONNRESET);
  EXPECT_EQ(rig.fins, 0);
}

// A receiver gone with bytes unread resets its side: the next send fails, reported as the
// receiver's.
TEST_P(RelayDirectionTest, AResetOfTheReceiverIsReported) {
  Rig rig(GetParam(), /*tcp=*/true);
  SKIP_WITHOUT_IO_URING(rig);
  const auto data = pattern(4000);
  std::size_t sent = 0;
  ASSERT_TRUE(rig.feed(data, &sent));
  ASSERT_TRUE(test::run_until(rig.loop, [&] { return rig.direction->total() == data.size(); }));
  rig.receiver.reset();  // with unread bytes: a reset, not a FIN
  ASSERT_TRUE(test::run_until(rig.loop, [&] {
    sent = 0;  // the same bytes again: they only have to be sent
    rig.feed(data, &sent);
    return rig.failed;
  }));
  EXPECT_EQ(rig.direction->failed_side(), rig.to);
  EXPECT_TRUE(rig.direction->error() == EPIPE || rig.direction->error() == ECONNRESET)
      << std::strerror(rig.direction->error());
}

// What is prepended (the PROXY header a session sends a server) is read first.
TEST_P(RelayDirectionTest, PrependedBytesGoFirst) {
  Rig rig(GetParam());
  SKIP_WITHOUT_IO_URING(rig);
  const std::string header = "PROXY TCP4 192.0.2.1 192.0.2.2 5555 80\r\n";
  rig.direction->prepend(std::as_bytes(std::span(header)));
  const auto data = pattern(100'000);
  std::size_t sent = 0;
  ASSERT_TRUE(test::run_until(
      rig.loop, [&] { return rig.exchange(data, &sent, header.size() + data.size()); }));
  const auto* h = reinterpret_cast<const std::byte*>(header.data());
  EXPECT_EQ(std::vector<std::byte>(rig.received.begin(), rig.received.begin() + header.size()),
            std::vector<std::byte>(h, h + header.size()));
  EXPECT_EQ(std::vector<std::byte>(rig.received.begin() + header.size(), rig.received.end()), data);
  EXPECT_EQ(rig.direction->total(), header.size() + data.size());
}

INSTANTIATE_TEST_SUITE_P(Modes, RelayDirectionTest,
                         ::testing::Values(Mode::buffers, Mode::splice, Mode::io_uring),
                         [](const auto& info) {
                           switch (info.param) {
                             case Mode::buffers: return std::string("buffers");
                             case Mode::splice: return std::string("splice");
                             case Mode::io_uring: return std::string("io_uring");
                           }
                           return std::string();
                         });

// A moved direction holding more than its buffer (a partial pipeful from a splice, up to 64 KiB)
// takes a buffer of the pipe's 64 KiB, not one of the odd size held, which the pool would keep
// in a list of its own that nothing else asks for.
TEST(RelayDirectionImportTest, APartialPipefulGetsAPipeSizedBuffer) {
  Rig rig(Mode::splice, true);
  DirectionRecord record;
  record.state = static_cast<std::uint8_t>(State::open);
  record.held.assign(40'000, std::byte{7});
  auto moved = std::make_unique<RelayDirection>(rig.resources, Rig::kBufferSize, true);
  moved->set_from(rig.from);
  moved->set_to(rig.to);
  moved->import_from(record);
  EXPECT_EQ(moved->held(), 40'000U);
  rig.direction = std::move(moved);
  rig.to->write.ready = true;
  rig.loop.post(rig.to->write);
  // Once those bytes are out, the direction reads into buffers of buffer_size again.
  const auto more = pattern(100);
  std::size_t sent = 0;
  ASSERT_TRUE(test::run_until(rig.loop, [&] { return rig.exchange(more, &sent, 40'100); }));
  EXPECT_EQ(rig.buffers.free_of(64 * 1024), 1U);
  EXPECT_EQ(rig.buffers.free_of(40'000), 0U);
  EXPECT_EQ(rig.buffers.free_of(Rig::kBufferSize), 1U) << "the next read took a 64 KiB buffer";
}

// The last bytes before a FIN go with MSG_MORE, for the FIN to ride in their segment. A session
// frozen for a move between the batched send's completion and the pump that passes the FIN
// would keep them corked until the new worker passes it: settle() sends them on.
TEST(RelayDirectionSettleTest, TheLastBytesBeforeAFinAreNotHeldBackByAMove) {
  Rig rig(Mode::io_uring, true);
  SKIP_WITHOUT_IO_URING(rig);
  const std::string last = "the last bytes";
  ASSERT_EQ(::send(rig.sender.get(), last.data(), last.size(), 0),
            static_cast<ssize_t>(last.size()));
  ASSERT_EQ(::shutdown(rig.sender.get(), SHUT_WR), 0);
  pollfd p{rig.from->fd.get(), POLLRDHUP, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1) << "the bytes and the FIN reach `from`";
  // As the loop marks a report of EPOLLIN | EPOLLRDHUP.
  rig.from->read.ready = rig.from->read.pending_eof = true;
  rig.to->write.ready = true;
  EXPECT_EQ(rig.direction->pump(true), Pumped::waiting);  // the recv, queued
  rig.batch.flush();
  EXPECT_EQ(rig.direction->pump(true), Pumped::waiting);  // the send (MSG_MORE), queued
  rig.batch.flush();  // done, its event posted and not run: frozen here
  ASSERT_TRUE(rig.direction->settle());
  EXPECT_EQ(rig.direction->state(), State::draining);
  int unsent = -1;
  ASSERT_EQ(::ioctl(rig.to->fd.get(), SIOCOUTQNSD, &unsent), 0);
  EXPECT_EQ(unsent, 0) << "the last bytes wait corked for a FIN passed only after the move";
}

}  // namespace
}  // namespace ferry::worker
