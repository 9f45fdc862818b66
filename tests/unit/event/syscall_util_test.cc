// Tests of event/syscall_util's all_bytes(): short counts and EINTR are gone through, a failure
// and an end of file stop it, over real pipes.
#include "event/syscall_util.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include <gtest/gtest.h>

namespace ferry::event {
namespace {

struct Pipe {
  UniqueFd read;
  UniqueFd write;
  Pipe() {
    int fds[2] = {-1, -1};
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    read.reset(fds[0]);
    write.reset(fds[1]);
  }
};

// Each read is cut to three bytes: the loop asks again until all ten are in.
TEST(AllBytesTest, ShortReadsAreReadOnUntilAllBytesAreIn) {
  Pipe p;
  const std::string sent = "0123456789";
  ASSERT_EQ(::write(p.write.get(), sent.data(), sent.size()), 10);
  std::array<char, 10> got{};
  int calls = 0;
  const AllBytes r = all_bytes(got.size(), [&](std::size_t done, std::size_t left) {
    ++calls;
    return ::read(p.read.get(), got.data() + done, std::min<std::size_t>(left, 3));
  });
  EXPECT_TRUE(r.complete);
  EXPECT_EQ(r.done, 10u);
  EXPECT_FALSE(r.error);
  EXPECT_EQ(calls, 4);
  EXPECT_EQ(std::string(got.data(), got.size()), sent);
}

TEST(AllBytesTest, AnEndOfFileStopsWithWhatWasRead) {
  Pipe p;
  ASSERT_EQ(::write(p.write.get(), "abc", 3), 3);
  p.write.reset();
  std::array<char, 8> got{};
  const AllBytes r = all_bytes(got.size(), [&](std::size_t done, std::size_t left) {
    return ::read(p.read.get(), got.data() + done, left);
  });
  EXPECT_FALSE(r.complete);
  EXPECT_EQ(r.done, 3u);
  EXPECT_FALSE(r.error);  // no failure: a call that moved nothing
}

TEST(AllBytesTest, AFailureStopsWithItsErrno) {
  Pipe p;
  std::array<char, 4> got{};
  // The write end cannot be read.
  const AllBytes r = all_bytes(got.size(), [&](std::size_t done, std::size_t left) {
    return ::read(p.write.get(), got.data() + done, left);
  });
  EXPECT_FALSE(r.complete);
  EXPECT_EQ(r.done, 0u);
  EXPECT_EQ(r.error, std::errc::bad_file_descriptor);
}

std::atomic<int> g_signals{0};
void count_signal(int) { g_signals.fetch_add(1); }

// A read blocked on an empty pipe, interrupted by a signal whose handler has no SA_RESTART,
// fails with EINTR: it is called again, and the bytes written later are read.
TEST(AllBytesTest, AReadInterruptedBySignalIsCalledAgain) {
  struct sigaction act {};
  struct sigaction old {};
  act.sa_handler = count_signal;
  ::sigemptyset(&act.sa_mask);
  act.sa_flags = 0;
  ASSERT_EQ(::sigaction(SIGUSR1, &act, &old), 0);
  Pipe p;
  std::atomic<int> calls{0};
  const pthread_t reader = ::pthread_self();
  std::thread writer([&] {
    // Signals the reader until it has been called again after an interrupted read (a signal
    // that lands before it blocks interrupts nothing), then gives it its bytes.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (calls.load() < 2 && std::chrono::steady_clock::now() < deadline) {
      ::pthread_kill(reader, SIGUSR1);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    EXPECT_EQ(::write(p.write.get(), "xy", 2), 2);
  });
  std::array<char, 2> got{};
  const AllBytes r = all_bytes(got.size(), [&](std::size_t done, std::size_t left) {
    calls.fetch_add(1);
    return ::read(p.read.get(), got.data() + done, left);
  });
  writer.join();
  ASSERT_EQ(::sigaction(SIGUSR1, &old, nullptr), 0);
  EXPECT_TRUE(r.complete);
  EXPECT_EQ(std::string(got.data(), got.size()), "xy");
  EXPECT_GE(calls.load(), 2);
  EXPECT_GE(g_signals.load(), 1);
}

}  // namespace
}  // namespace ferry::event
