// IoBatch: one submit for many sends and recvs, results as send()/recv() give them, cancelled
// sends that never reach the wire, -EAGAIN at once where a call would block, the loop's flush,
// and injected failures: a failed or partial submit that reports only live operations, a wait
// cut short by signals, a failed wait that ends the process.
#include "event/io_batch.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
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

// An owner of queued operations that a completion reads, as the relay's pipes are: a report for
// one already freed is a use-after-free (seen by ASan).
struct Owner {
  std::string name;
};
std::vector<std::string> g_reported;
void record_owner(void* cookie, int result) {
  g_reported.push_back(static_cast<Owner*>(cookie)->name + ":" + std::to_string(result));
}

class IoBatchFailureTest : public ::testing::Test {
 protected:
  void SetUp() override {
    g_reported.clear();
    if (!batch_.init(8, record_owner)) GTEST_SKIP() << "io_uring is not available here";
  }
  IoBatch batch_;
};

TEST_F(IoBatchFailureTest, AFailedSubmitReportsOnlyLiveOperationsAndStopsTheBatch) {
  auto [a, b] = test::socket_pair();
  auto [c, d] = test::socket_pair();
  auto first = std::make_unique<Owner>(Owner{"first"});
  auto gone = std::make_unique<Owner>(Owner{"gone"});
  auto last = std::make_unique<Owner>(Owner{"last"});
  const std::string text = "never sent";
  std::byte buf[64];
  ASSERT_NE(batch_.queue_send(a.get(), bytes(text), first.get()), nullptr);
  const IoBatch::Handle h = batch_.queue_send(c.get(), bytes(text), gone.get());
  ASSERT_NE(h, nullptr);
  ASSERT_NE(batch_.queue_recv(b.get(), buf, last.get()), nullptr);
  // The session owning `gone` closes before the flush: cancelled, then freed.
  IoBatch::cancel(h);
  gone.reset();
  batch_.fail_next_submit(ENOMEM);
  batch_.flush();
  const std::string cancelled = ":" + std::to_string(-ECANCELED);
  EXPECT_EQ(g_reported, (std::vector<std::string>{"first" + cancelled, "last" + cancelled}));
  EXPECT_FALSE(batch_.enabled());
  EXPECT_EQ(batch_.pending(), 0U);
  EXPECT_EQ(drain(b.get()), "") << "nothing was submitted";
  EXPECT_EQ(drain(d.get()), "");
  EXPECT_EQ(batch_.queue_send(a.get(), bytes(text), first.get()), nullptr)
      << "a stopped batch must send nothing more";
}

TEST_F(IoBatchFailureTest, QueuedClosesAreDoneDirectlyWhenTheSubmitFails) {
  auto [a, b] = test::socket_pair();
  const int fd = a.release();
  ASSERT_TRUE(batch_.queue_close(fd));
  batch_.fail_next_submit(EBUSY);
  batch_.flush();
  EXPECT_TRUE(g_reported.empty());
  EXPECT_EQ(::fcntl(fd, F_GETFD), -1) << "the fd leaked";
  char byte;
  EXPECT_EQ(::recv(b.get(), &byte, 1, MSG_DONTWAIT), 0) << "the peer sees the EOF";
}

TEST_F(IoBatchFailureTest, APartialSubmitReportsWhatTheKernelTookAndCancelsTheRest) {
  auto [a, b] = test::socket_pair();
  auto [c, d] = test::socket_pair();
  auto [e, f] = test::socket_pair();
  Owner taken{"taken"}, left{"left"};
  const std::string text = "sent";
  const int fd = e.release();
  ASSERT_NE(batch_.queue_send(a.get(), bytes(text), &taken), nullptr);
  ASSERT_NE(batch_.queue_send(c.get(), bytes(text), &left), nullptr);
  ASSERT_TRUE(batch_.queue_close(fd));
  batch_.take_next_submit(1);
  batch_.flush();
  EXPECT_EQ(g_reported, (std::vector<std::string>{"taken:" + std::to_string(text.size()),
                                                  "left:" + std::to_string(-ECANCELED)}));
  EXPECT_EQ(drain(b.get()), text) << "the operation the kernel took was done";
  EXPECT_EQ(drain(d.get()), "") << "an operation the kernel did not take was done";
  EXPECT_EQ(::fcntl(fd, F_GETFD), -1) << "the close the kernel did not take leaked its fd";
  EXPECT_FALSE(batch_.enabled());
  EXPECT_EQ(batch_.pending(), 0U);
  EXPECT_EQ(batch_.queue_send(a.get(), bytes(text), &taken), nullptr);
}

TEST_F(IoBatchFailureTest, AWaitCutShortBySignalsIsWaitedAgainAndReportsEveryResult) {
  auto [a, b] = test::socket_pair();
  auto [c, d] = test::socket_pair();
  Owner one{"one"}, two{"two"};
  const std::string text = "both";
  ASSERT_NE(batch_.queue_send(a.get(), bytes(text), &one), nullptr);
  ASSERT_NE(batch_.queue_send(c.get(), bytes(text), &two), nullptr);
  batch_.cut_next_wait(EINTR);
  batch_.flush();
  const std::string sent = ":" + std::to_string(text.size());
  EXPECT_EQ(g_reported, (std::vector<std::string>{"one" + sent, "two" + sent}));
  EXPECT_EQ(drain(b.get()), text);
  EXPECT_EQ(drain(d.get()), text);
  EXPECT_TRUE(batch_.enabled()) << "an interrupted wait is no failure";
}

// Operations the kernel took may still use their buffers: reporting them -ECANCELED (whose
// owners then free the buffers) is not safe, so the process ends and its master respawns it.
void flush_with_a_failed_wait() {
  spdlog::set_default_logger(spdlog::stderr_logger_st("death test"));  // what EXPECT_EXIT reads
  IoBatch batch;  // its own ring: the parent's is not the child's to use
  if (!batch.init(8, record_owner)) std::_Exit(99);
  auto [x, y] = test::socket_pair();
  Owner owner{"owner"};
  const std::string text = "x";
  batch.queue_send(x.get(), bytes(text), &owner);
  batch.cut_next_wait(EBADF);
  batch.flush();
  std::_Exit(0);  // reported as if cancelled while the kernel may still hold it
}

TEST_F(IoBatchFailureTest, AFailedWaitWithOperationsInTheKernelEndsTheProcess) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(flush_with_a_failed_wait(), ::testing::ExitedWithCode(IoBatch::kBrokenRingExit),
              "operations still in the kernel");
}

// A completion may close another owner whose operation is in the same flush: the cancel is
// heard though the kernel has already answered.
Owner* g_victim = nullptr;
IoBatch::Handle g_victim_handle = nullptr;
void cancel_victim(void* cookie, int result) {
  record_owner(cookie, result);
  if (g_victim != nullptr) {
    IoBatch::cancel(g_victim_handle);
    delete g_victim;
    g_victim = nullptr;
  }
}

TEST(IoBatchCancelTest, ACompletionCanCancelALaterOperationOfTheSameFlush) {
  g_reported.clear();
  IoBatch batch;
  if (!batch.init(8, cancel_victim)) GTEST_SKIP() << "io_uring is not available here";
  auto [a, b] = test::socket_pair();
  auto [c, d] = test::socket_pair();
  Owner killer{"killer"};
  g_victim = new Owner{"victim"};
  const std::string text = "x";
  ASSERT_NE(batch.queue_send(a.get(), bytes(text), &killer), nullptr);
  g_victim_handle = batch.queue_send(c.get(), bytes(text), g_victim);
  ASSERT_NE(g_victim_handle, nullptr);
  batch.flush();
  EXPECT_EQ(g_reported, std::vector<std::string>{"killer:1"});
  EXPECT_EQ(g_victim, nullptr);
  EXPECT_TRUE(batch.enabled());
}

// A failed flush inside close_connection() (a full ring flushed to queue the close) reports
// operations whose completions post the closing connection's event: it must not stay posted.
EventLoop* g_loop = nullptr;
void post_event(void* cookie, int) { g_loop->post(*static_cast<Event*>(cookie)); }

TEST(IoBatchLoopTest, AFailedFlushInsideACloseLeavesNoEventOfTheFreedEntryPosted) {
  EventLoop loop;
  ASSERT_FALSE(loop.init({.connections = 4, .epoll_events = 8}));
  IoBatch batch;
  if (!batch.init(8, post_event)) GTEST_SKIP() << "io_uring is not available here";
  g_loop = &loop;
  loop.set_batch(&batch, 0);
  auto [mine, peer] = test::socket_pair();
  Connection* c = loop.get_connection(std::move(mine));
  ASSERT_NE(c, nullptr);
  static int handled = 0;
  handled = 0;
  c->read.handler = c->write.handler = [](Event&) { ++handled; };
  ASSERT_FALSE(loop.add_connection(*c));
  // The ring full of recvs reporting to c's read event, the next submit failing.
  auto [x, y] = test::socket_pair();
  std::byte buf[8][16];
  for (auto& one : buf) ASSERT_NE(batch.queue_recv(y.get(), one, &c->read), nullptr);
  batch.fail_next_submit(ENOMEM);
  loop.close_connection(*c);
  EXPECT_FALSE(batch.enabled()) << "queueing the close should have flushed the full ring";
  EXPECT_FALSE(c->read.posted) << "the freed entry's event is still posted";
  Event guard;  // an expired timer: one iteration that does not wait, then the posted events
  guard.handler = [](Event&) {};
  loop.add_timer(guard, std::chrono::milliseconds(0));
  loop.process_events_and_timers();
  EXPECT_EQ(handled, 0) << "a handler ran on a freed entry";
  g_loop = nullptr;
}

}  // namespace
}  // namespace ferry::event
