// IoBatch: one submit for many sends and recvs, results as send()/recv() give them, cancelled
// sends that never reach the wire, -EAGAIN at once where a call would block, the loop's flush.
#include "event/io_batch.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "event/event_loop.h"
#include "tests/support/loop_helpers.h"

namespace ferry::event {
namespace {

struct Done {
  void* cookie;
  int result;
};
std::vector<Done> g_done;
void record(void* cookie, int result) { g_done.push_back({cookie, result}); }

std::span<const std::byte> bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

std::string drain(int fd) {
  std::string got;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0) return got;
    got.append(buf, static_cast<std::size_t>(n));
  }
}

class IoBatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    g_done.clear();
    if (!batch_.init(8, record)) GTEST_SKIP() << "io_uring is not available here";
  }
  IoBatch batch_;
};

TEST_F(IoBatchTest, ManySendsGoOutInOneSubmitWithSendsResults) {
  std::vector<std::pair<UniqueFd, UniqueFd>> pairs;
  std::vector<std::string> texts;
  for (int i = 0; i < 5; ++i) {
    pairs.push_back(test::socket_pair());
    texts.push_back("message " + std::to_string(i));
  }
  for (int i = 0; i < 5; ++i) batch_.queue_send(pairs[i].first.get(), bytes(texts[i]), &texts[i]);
  EXPECT_EQ(batch_.pending(), 5U);
  EXPECT_EQ(drain(pairs[0].second.get()), "") << "nothing may leave before the flush";
  batch_.flush();
  EXPECT_EQ(batch_.pending(), 0U);
  EXPECT_EQ(batch_.submits(), 1U);
  ASSERT_EQ(g_done.size(), 5U);
  for (const Done& d : g_done) {
    const auto& text = *static_cast<std::string*>(d.cookie);
    EXPECT_EQ(d.result, static_cast<int>(text.size()));
  }
  for (int i = 0; i < 5; ++i) EXPECT_EQ(drain(pairs[i].second.get()), texts[i]);
}

TEST_F(IoBatchTest, ACancelledSendNeverReachesTheWireNorReports) {
  auto [a, b] = test::socket_pair();
  auto [c, d] = test::socket_pair();
  const std::string dropped = "must not arrive", kept = "kept";
  const IoBatch::Handle h = batch_.queue_send(a.get(), bytes(dropped), &a);
  batch_.queue_send(c.get(), bytes(kept), &c);
  IoBatch::cancel(h);
  batch_.flush();
  ASSERT_EQ(g_done.size(), 1U);
  EXPECT_EQ(g_done[0].cookie, &c);
  EXPECT_EQ(drain(b.get()), "");
  EXPECT_EQ(drain(d.get()), kept);
}

TEST_F(IoBatchTest, AFullSocketAnswersEagainWithoutWaiting) {
  auto [a, b] = test::socket_pair();
  const std::string block(65536, 'x');
  while (::send(a.get(), block.data(), block.size(), MSG_DONTWAIT) > 0) {
  }
  batch_.queue_send(a.get(), bytes(block), &a);
  const auto start = std::chrono::steady_clock::now();
  batch_.flush();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  ASSERT_EQ(g_done.size(), 1U);
  EXPECT_EQ(g_done[0].result, -EAGAIN);
}

TEST_F(IoBatchTest, MoreSendsThanTheRingHoldsAreFlushedAsTheyCome) {
  std::vector<std::pair<UniqueFd, UniqueFd>> pairs;
  const std::string text = "x";
  for (int i = 0; i < 20; ++i) pairs.push_back(test::socket_pair());
  for (auto& p : pairs) batch_.queue_send(p.first.get(), bytes(text), &p);
  batch_.flush();
  EXPECT_EQ(g_done.size(), 20U);
  EXPECT_GE(batch_.submits(), 3U) << "an 8-entry ring takes 20 sends in at least 3 submits";
  for (auto& p : pairs) EXPECT_EQ(drain(p.second.get()), text);
}

TEST_F(IoBatchTest, RecvsReturnDataEagainOrEofAsRecvWould) {
  auto [a, b] = test::socket_pair();  // data waiting
  auto [c, d] = test::socket_pair();  // nothing yet
  auto [e, f] = test::socket_pair();  // peer gone
  ASSERT_EQ(::send(a.get(), "hello", 5, 0), 5);
  c.reset();
  std::byte bufs[3][64];
  batch_.queue_recv(b.get(), bufs[0], &a);
  batch_.queue_recv(d.get(), bufs[1], &b);
  batch_.queue_recv(f.get(), bufs[2], &c);
  e.reset();
  batch_.flush();
  ASSERT_EQ(g_done.size(), 3U);
  EXPECT_EQ(batch_.submits(), 1U);
  EXPECT_EQ(g_done[0].result, 5);
  EXPECT_EQ(std::memcmp(bufs[0], "hello", 5), 0);
  EXPECT_EQ(g_done[1].result, 0) << "the peer of d was closed: EOF";
  EXPECT_EQ(g_done[2].result, 0) << "the peer of f was closed: EOF";
}

TEST_F(IoBatchTest, ARecvOnAnEmptySocketAnswersEagainWithoutWaiting) {
  auto [a, b] = test::socket_pair();
  std::byte buf[64];
  batch_.queue_recv(b.get(), buf, &a);
  const auto start = std::chrono::steady_clock::now();
  batch_.flush();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  ASSERT_EQ(g_done.size(), 1U);
  EXPECT_EQ(g_done[0].result, -EAGAIN);
}

TEST_F(IoBatchTest, AQueuedCloseHappensAtTheFlushAndNotBefore) {
  auto [a, b] = test::socket_pair();
  const int fd = a.release();
  ASSERT_TRUE(batch_.queue_close(fd));
  EXPECT_EQ(::fcntl(fd, F_GETFD), FD_CLOEXEC) << "the fd must stay open until the flush";
  char byte;
  EXPECT_EQ(::recv(b.get(), &byte, 1, MSG_DONTWAIT), -1) << "no EOF before the flush";
  batch_.flush();
  EXPECT_TRUE(g_done.empty()) << "closes report nothing";
  EXPECT_EQ(::fcntl(fd, F_GETFD), -1);
  EXPECT_EQ(errno, EBADF);
  EXPECT_EQ(::recv(b.get(), &byte, 1, MSG_DONTWAIT), 0) << "the peer sees the EOF";
}

TEST(IoBatchLifetimeTest, ACloseQueuedButNeverFlushedIsStillDone) {
  auto [a, b] = test::socket_pair();
  const int fd = a.release();
  {
    IoBatch batch;
    if (!batch.init(8, record)) GTEST_SKIP() << "io_uring is not available here";
    ASSERT_TRUE(batch.queue_close(fd));
  }
  EXPECT_EQ(::fcntl(fd, F_GETFD), -1) << "the fd leaked with the batch";
}

// The loop flushes what its handlers queued before it waits again.
TEST_F(IoBatchTest, TheLoopFlushesAtTheEndOfTheIteration) {
  EventLoop loop;
  ASSERT_FALSE(loop.init({.connections = 4, .epoll_events = 8}));
  loop.set_batch(&batch_, 1);
  auto [a, b] = test::socket_pair();
  auto [peer, mine] = test::socket_pair();
  Connection* c = loop.get_connection(std::move(mine));
  ASSERT_NE(c, nullptr);
  static IoBatch* batch = &batch_;
  static int out_fd = a.get();
  static const std::string reply = "queued in a handler";
  c->read.handler = [](Event&) { batch->queue_send(out_fd, bytes(reply), &out_fd); };
  c->write.handler = [](Event&) {};
  ASSERT_FALSE(loop.add_event(c->read, EventKind::read));
  ASSERT_EQ(::send(peer.get(), "go", 2, 0), 2);
  ASSERT_TRUE(test::run_until(loop, [&] { return !g_done.empty(); }));
  EXPECT_EQ(batch_.pending(), 0U);
  EXPECT_EQ(drain(b.get()), reply);
  loop.close_connection(*c);
}

}  // namespace
}  // namespace ferry::event
