// Connection: one socket with its read and write events (nginx's ngx_connection_t), and the
// per-loop ConnectionPool that preallocates them and hands them out from a free list.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "event/event.h"
#include "event/socket_address.h"
#include "event/syscall_util.h"

struct ssl_st;  // OpenSSL's SSL: event/ only carries the pointer, worker/tls/ uses it

namespace ferry::event {

struct Listening;

struct Connection {
  // `index` of an entry that is not in a pool (a listener, the notifier, the master's own).
  static constexpr std::uint32_t kNoSlot = UINT32_MAX;

  UniqueFd fd;
  Event read;
  Event write;
  void* data = nullptr;                  // the user of the connection (a session, a notifier, ...)
  const Listening* listening = nullptr;  // set on accepted connections
  SocketAddress peer;
  // The TLS of this connection when ferry terminates or originates it (worker/tls/tls_io.h),
  // else null. Its owner frees it before the connection goes back to the pool.
  ssl_st* ssl = nullptr;
  Connection* next_free = nullptr;
  std::uint32_t index = kNoSlot;  // slot in the pool
  // Counts the pool's hand-outs of this entry: epoll reports carry the value of their time, so
  // a report for an earlier owner is recognised however often the entry was reused since
  // (within one epoll batch, LIFO reuse of denied clients can hand it out again and again).
  std::uint32_t generation = 0;

  Connection() noexcept {
    read.data = this;
    write.data = this;
    write.write = true;
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
};

class ConnectionPool {
 public:
  explicit ConnectionPool(std::size_t size);
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // Takes a free entry for `fd`, advancing its generation so that epoll reports still queued
  // for the entry's previous owners are recognised as stale. Returns nullptr when none is free;
  // `fd` is then closed.
  Connection* get(UniqueFd fd) noexcept;
  // Returns an entry whose fd, timers and posted events are already gone.
  void free(Connection& c) noexcept;

  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] std::size_t free_count() const noexcept { return free_count_; }
  [[nodiscard]] Connection& at(std::size_t i) noexcept { return entries_[i]; }
  [[nodiscard]] Connection* entries() noexcept { return entries_.get(); }

 private:
  std::unique_ptr<Connection[]> entries_;
  Connection* free_list_ = nullptr;
  std::size_t size_;
  std::size_t free_count_;
};

}  // namespace ferry::event
