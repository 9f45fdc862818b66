// ConnectionPool: preallocated entries, a LIFO free list, a generation advanced on reuse.
#include "event/connection.h"

#include <cassert>

namespace ferry::event {

ConnectionPool::ConnectionPool(std::size_t size)
    : entries_(std::make_unique<Connection[]>(size)), size_(size), free_count_(size) {
  // Built back to front so that the first get() returns entry 0.
  for (std::size_t i = size; i-- > 0;) {
    entries_[i].index = static_cast<std::uint32_t>(i);
    entries_[i].next_free = free_list_;
    free_list_ = &entries_[i];
  }
}

Connection* ConnectionPool::get(UniqueFd fd) noexcept {
  Connection* c = free_list_;
  if (c == nullptr) return nullptr;
  free_list_ = c->next_free;
  --free_count_;

  // close_connection() disarms and unposts; an armed free entry is a caller's bug.
  assert(!c->read.timer_set && !c->write.timer_set && !c->read.posted && !c->write.posted);
  c->read.reset();
  c->write.reset();
  ++c->generation;
  c->read.data = c->write.data = c;
  c->write.write = true;
  c->fd = std::move(fd);
  c->data = nullptr;
  c->listening = nullptr;
  c->next_free = nullptr;
  return c;
}

void ConnectionPool::free(Connection& c) noexcept {
  c.fd.reset();
  c.data = nullptr;
  c.ssl = nullptr;  // freed by its owner (event/ knows nothing of OpenSSL)
  c.next_free = free_list_;
  free_list_ = &c;
  ++free_count_;
}

}  // namespace ferry::event
