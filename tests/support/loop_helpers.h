// Test helpers for driving an EventLoop: bounded iteration until a condition holds, and
// socketpairs wrapped in pooled connections.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>

#include <chrono>
#include <utility>

#include <gtest/gtest.h>

#include "event/event_loop.h"

namespace ferry::test {

// Iterates `loop` until `done()` is true or `limit` passes; returns done(). A guard timer keeps
// each epoll_wait bounded, so a missing wake-up fails the test instead of hanging it.
template <typename Done>
bool run_until(event::EventLoop& loop, Done&& done,
               std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  event::Event guard;
  guard.handler = [](event::Event&) {};
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) break;
    loop.add_timer(guard, std::chrono::milliseconds(50));
    loop.process_events_and_timers();
  }
  loop.del_timer(guard);
  return done();
}

// A connected, non-blocking, close-on-exec AF_UNIX stream pair.
inline std::pair<event::UniqueFd, event::UniqueFd> socket_pair() {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
  return {event::UniqueFd(fds[0]), event::UniqueFd(fds[1])};
}

// A connected, non-blocking, close-on-exec TCP pair over IPv4 loopback (only TCP resets): the
// connecting side first, the accepted one second.
inline std::pair<event::UniqueFd, event::UniqueFd> tcp_pair() {
  event::UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sin;
  auto* addr = reinterpret_cast<sockaddr*>(&sin);
  EXPECT_EQ(::bind(listener.get(), addr, len), 0);
  EXPECT_EQ(::listen(listener.get(), 1), 0);
  EXPECT_EQ(::getsockname(listener.get(), addr, &len), 0);
  event::UniqueFd a(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  EXPECT_TRUE(::connect(a.get(), addr, len) == 0 || errno == EINPROGRESS);
  // accept() returns once the handshake is done: `a` is connected by then.
  event::UniqueFd b(::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
  EXPECT_TRUE(b.valid());
  return {std::move(a), std::move(b)};
}

}  // namespace ferry::test
