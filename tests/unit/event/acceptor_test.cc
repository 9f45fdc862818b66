// Tests of event/acceptor with real listening sockets: accepting, multi_accept, the accept
// mutex and its posted-event order, and the pause on descriptor exhaustion.
#include "event/acceptor.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <new>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "event/event_loop.h"
#include "event/shared_memory.h"
#include "tests/support/loop_helpers.h"

namespace ferry::event {
namespace {

using std::chrono::milliseconds;

UniqueFd connect_to(const SocketAddress& addr) {
  UniqueFd fd(::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_TRUE(fd.valid());
  EXPECT_EQ(::connect(fd.get(), addr.get(), addr.length()), 0) << std::strerror(errno);
  return fd;
}

struct Accepted {
  EventLoop* loop = nullptr;
  std::vector<std::string> peers;
  std::vector<const Listening*> listening;
  std::vector<std::string>* order = nullptr;
  AcceptMutex* probe = nullptr;  // a second handle on the lock word: is it held right now?
};

void on_connection(Connection& c, void* ctx) {
  auto& a = *static_cast<Accepted*>(ctx);
  a.peers.push_back(c.peer.to_string());
  a.listening.push_back(c.listening);
  if (a.order != nullptr) {
    a.order->push_back(a.probe->holder() != 0 ? "accept:locked" : "accept:unlocked");
  }
  a.loop->close_connection(c);
}

class AcceptorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(loop.init({.connections = 64, .epoll_events = 64}));
    ls.address = *SocketAddress::parse_numeric("127.0.0.1:0");
    ASSERT_FALSE(open_listening(ls));
    accepted.loop = &loop;
  }
  std::error_code start(const AcceptOptions& options) {
    const Listening* list[] = {&ls};
    return acceptor.init(loop, list, options, on_connection, &accepted);
  }

  EventLoop loop;
  Listening ls;
  Accepted accepted;
  Acceptor acceptor;
};

TEST_F(AcceptorTest, AcceptsAndHandsOverTheConnectionWithItsPeerAndListening) {
  ASSERT_FALSE(start({}));
  EXPECT_NE(ls.address.port(), 0);
  UniqueFd client = connect_to(ls.address);
  ASSERT_TRUE(test::run_until(loop, [&] { return accepted.peers.size() == 1; }));
  EXPECT_EQ(accepted.peers[0].rfind("127.0.0.1:", 0), 0U) << accepted.peers[0];
  EXPECT_EQ(accepted.listening[0], &ls);
  EXPECT_EQ(acceptor.stats().accepted, 1U);
  // The server side was closed by the handler: the client sees EOF.
  char byte;
  EXPECT_EQ(::recv(client.get(), &byte, 1, 0), 0);
}

TEST_F(AcceptorTest, MultiAcceptTakesEveryQueuedConnectionInOneEvent) {
  ASSERT_FALSE(start({.multi_accept = true}));
  std::vector<UniqueFd> clients;
  for (int i = 0; i < 5; ++i) clients.push_back(connect_to(ls.address));
  Event guard;
  guard.handler = [](Event&) {};
  loop.add_timer(guard, milliseconds(1000));  // bounds the wait
  loop.process_events_and_timers();
  loop.del_timer(guard);
  EXPECT_EQ(accepted.peers.size(), 5U);
}

TEST_F(AcceptorTest, WithoutMultiAcceptOneConnectionPerEvent) {
  ASSERT_FALSE(start({.multi_accept = false}));
  std::vector<UniqueFd> clients;
  for (int i = 0; i < 3; ++i) clients.push_back(connect_to(ls.address));
  Event guard;
  guard.handler = [](Event&) {};
  loop.add_timer(guard, milliseconds(1000));
  loop.process_events_and_timers();
  EXPECT_EQ(accepted.peers.size(), 1U);
  // Level-triggered: the rest are reported again on the next iterations.
  ASSERT_TRUE(test::run_until(loop, [&] { return accepted.peers.size() == 3; }));
}

struct Reader {
  std::vector<std::string>* order;
  AcceptMutex* probe;
};

// With the mutex held, accept events are posted and run first, while the lock is still held;
// other events run after it is released — even when epoll reported them first.
TEST_F(AcceptorTest, PostedAcceptEventsRunBeforePostedEventsAndBeforeTheMutexIsReleased) {
  SharedMemory shm;
  ASSERT_FALSE(shm.create(sizeof(AcceptMutexWord)));
  auto* word = new (shm.data()) AcceptMutexWord;
  AcceptMutex mutex(*word, ::getpid());
  AcceptMutex probe(*word, 1);
  std::vector<std::string> order;
  accepted.order = &order;
  accepted.probe = &probe;
  ASSERT_FALSE(start({.mutex = &mutex, .delay = milliseconds(50)}));

  // A plain connection made readable before the client connects: epoll reports it first.
  auto [fd, peer] = test::socket_pair();
  Connection* c = loop.get_connection(std::move(fd));
  ASSERT_NE(c, nullptr);
  Reader reader{&order, &probe};
  c->data = &reader;
  c->read.handler = [](Event& ev) {
    auto& r = *static_cast<Reader*>(static_cast<Connection*>(ev.data)->data);
    r.order->push_back(r.probe->holder() != 0 ? "read:locked" : "read:unlocked");
    char buf[8];
    while (::read(static_cast<Connection*>(ev.data)->fd.get(), buf, sizeof buf) > 0) {
    }
  };
  c->write.handler = [](Event&) {};
  ASSERT_FALSE(loop.add_event(c->read, EventKind::read));
  ASSERT_EQ(::write(peer.get(), "r", 1), 1);
  UniqueFd client = connect_to(ls.address);

  loop.process_events_and_timers();
  EXPECT_EQ(order, (std::vector<std::string>{"accept:locked", "read:unlocked"}));
  EXPECT_TRUE(acceptor.mutex_held());
  EXPECT_EQ(mutex.holder(), 0) << "the lock must be released at the end of the iteration";
  loop.close_connection(*c);
  acceptor.close();  // before the shared memory goes
}

TEST_F(AcceptorTest, AWorkerWithoutTheMutexDoesNotAcceptAndWaitsAtMostTheDelay) {
  SharedMemory shm;
  ASSERT_FALSE(shm.create(sizeof(AcceptMutexWord)));
  auto* word = new (shm.data()) AcceptMutexWord;
  AcceptMutex mine(*word, ::getpid());
  AcceptMutex other_worker(*word, 424242);
  ASSERT_TRUE(other_worker.try_lock());
  ASSERT_FALSE(start({.mutex = &mine, .delay = milliseconds(40)}));

  UniqueFd client = connect_to(ls.address);
  for (int i = 0; i < 3; ++i) {
    loop.process_events_and_timers();
    EXPECT_EQ(loop.last_wait_timeout(), 40);
  }
  EXPECT_TRUE(accepted.peers.empty()) << "accepted without holding the accept mutex";

  other_worker.unlock();
  EXPECT_TRUE(test::run_until(loop, [&] { return accepted.peers.size() == 1; }));
  acceptor.close();  // before the shared memory goes
}

// A handler that shuts accepting down in the middle of an epoll batch (a quit arriving with a
// connection) must leave no dangling report behind.
TEST_F(AcceptorTest, ClosingFromAHandlerMidBatchIsSafe) {
  static Acceptor* self;
  self = &acceptor;
  auto [fd, peer] = test::socket_pair();
  Connection* c = loop.get_connection(std::move(fd));
  ASSERT_NE(c, nullptr);
  c->read.handler = [](Event&) { self->close(); };
  c->write.handler = [](Event&) {};
  ASSERT_FALSE(start({.multi_accept = true}));
  ASSERT_FALSE(loop.add_event(c->read, EventKind::read));
  UniqueFd client = connect_to(ls.address);
  ASSERT_EQ(::write(peer.get(), "q", 1), 1);
  Event guard;
  guard.handler = [](Event&) {};
  for (int i = 0; i < 3; ++i) {
    loop.add_timer(guard, milliseconds(50));
    loop.process_events_and_timers();
  }
  EXPECT_TRUE(acceptor.closed());
  EXPECT_LE(accepted.peers.size(), 1U);
  loop.del_timer(guard);
  loop.close_connection(*c);
}

TEST_F(AcceptorTest, AcceptDisabledFollowsTheFreeConnections) {
  EventLoop small;
  ASSERT_FALSE(small.init({.connections = 16, .epoll_events = 16}));
  static std::vector<Connection*> kept;
  kept.clear();
  Acceptor a;
  const Listening* list[] = {&ls};
  ASSERT_FALSE(a.init(
      small, list, {.multi_accept = true}, [](Connection& c, void*) { kept.push_back(&c); },
      nullptr));
  std::vector<UniqueFd> clients;
  for (int i = 0; i < 16; ++i) clients.push_back(connect_to(ls.address));
  ASSERT_TRUE(test::run_until(small, [&] { return kept.size() == 16; }));
  // 16 / 8 - free: with every entry in use, the worker is 2 over nginx's threshold.
  EXPECT_EQ(a.accept_disabled, 16 / 8 - 1);
  for (Connection* c : kept) small.close_connection(*c);
}

// Runs in a child process: its descriptor limit is lowered until accept4 fails with EMFILE.
int emfile_child() {
  EventLoop loop;
  if (loop.init({.connections = 8, .epoll_events = 8})) return 10;
  Listening ls;
  ls.address = *SocketAddress::parse_numeric("127.0.0.1:0");
  if (open_listening(ls)) return 11;
  static int accepted;
  Acceptor acceptor;
  const Listening* list[] = {&ls};
  if (acceptor.init(
          loop, list, {.delay = milliseconds(100)},
          [](Connection& c, void* l) {
            ++accepted;
            static_cast<EventLoop*>(l)->close_connection(c);
          },
          &loop)) {
    return 12;
  }
  UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (::connect(client.get(), ls.address.get(), ls.address.length()) != 0) return 13;
  Event guard;
  guard.handler = [](Event&) {};

  // The lowest free descriptor becomes the limit: the next accept4 cannot get one.
  const int probe = ::dup(0);
  ::close(probe);
  rlimit saved{};
  ::getrlimit(RLIMIT_NOFILE, &saved);
  rlimit low = saved;
  low.rlim_cur = static_cast<rlim_t>(probe);
  if (::setrlimit(RLIMIT_NOFILE, &low) != 0) return 14;

  const auto end = std::chrono::steady_clock::now() + milliseconds(450);
  int iterations = 0;
  while (std::chrono::steady_clock::now() < end) {
    loop.add_timer(guard, milliseconds(20));
    loop.process_events_and_timers();
    ++iterations;
  }
  std::fprintf(stderr, "pauses=%zu iterations=%d accepted=%d\n", acceptor.stats().fd_exhausted,
               iterations, accepted);
  if (accepted != 0) return 15;
  // One pause per 100 ms delay: 4-6 in 450 ms. A spinning acceptor would count thousands.
  if (acceptor.stats().fd_exhausted < 2 || acceptor.stats().fd_exhausted > 8) return 16;
  if (iterations > 100) return 17;  // guard timers alone give ~23 iterations

  ::setrlimit(RLIMIT_NOFILE, &saved);
  if (!test::run_until(
          loop, [&] { return accepted == 1; }, std::chrono::seconds(5)))
    return 18;
  return 0;
}

TEST(AcceptorEmfileTest, DescriptorExhaustionPausesAcceptingInsteadOfSpinningThenRecovers) {
  const pid_t child = ::fork();
  ASSERT_NE(child, -1);
  if (child == 0) ::_exit(emfile_child());
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "see the child's stderr; codes are in emfile_child()";
}

}  // namespace
}  // namespace ferry::event
