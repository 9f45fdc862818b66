// IoBatch: liburing setup, queueing with MSG_DONTWAIT, one submit-and-wait per flush.
#include "event/io_batch.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

#include <spdlog/spdlog.h>

namespace ferry::event {

namespace {
std::string error_text(int negative_errno) {
  return std::system_category().message(-negative_errno);
}

// The cookie of closes, whose results only matter when they fail.
char g_close_cookie;
}  // namespace

IoBatch::~IoBatch() {
  for (const int fd : closing_) ::close(fd);  // queued, never submitted: not leaked either
  if (enabled_) ::io_uring_queue_exit(&ring_);
}

bool IoBatch::init(unsigned entries, Completion done) {
  done_ = done;
  // SUBMIT_ALL: an entry that fails at submission does not hold back the rest of the batch.
  int rc = ::io_uring_queue_init(entries, &ring_, IORING_SETUP_SUBMIT_ALL);
  if (rc == -EINVAL) rc = ::io_uring_queue_init(entries, &ring_, 0);  // before Linux 5.18
  if (rc < 0) {
    spdlog::warn("io_uring_queue_init() failed: {}; sending with send()", error_text(rc));
    return false;
  }
  queued_.reserve(entries);
  enabled_ = true;
  return true;
}

IoBatch::Handle IoBatch::queue_send(int fd, std::span<const std::byte> data, void* cookie) {
  io_uring_sqe* sqe = next_sqe();
  if (sqe == nullptr) return nullptr;
  ::io_uring_prep_send(sqe, fd, data.data(), data.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  ::io_uring_sqe_set_data(sqe, cookie);
  queued_.push_back(cookie);
  return sqe;
}

IoBatch::Handle IoBatch::queue_recv(int fd, std::span<std::byte> buffer, void* cookie) {
  io_uring_sqe* sqe = next_sqe();
  if (sqe == nullptr) return nullptr;
  ::io_uring_prep_recv(sqe, fd, buffer.data(), buffer.size(), MSG_DONTWAIT);
  ::io_uring_sqe_set_data(sqe, cookie);
  queued_.push_back(cookie);
  return sqe;
}

io_uring_sqe* IoBatch::next_sqe() {
  io_uring_sqe* sqe = ::io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    flush();
    if (!enabled_) return nullptr;  // the flush failed and took the ring down
    sqe = ::io_uring_get_sqe(&ring_);
  }
  return sqe;
}

bool IoBatch::queue_close(int fd) {
  io_uring_sqe* sqe = next_sqe();
  if (sqe == nullptr) return false;
  ::io_uring_prep_close(sqe, fd);
  ::io_uring_sqe_set_data(sqe, &g_close_cookie);
  queued_.push_back(&g_close_cookie);
  closing_.push_back(fd);
  return true;
}

void IoBatch::cancel(Handle h) noexcept {
  ::io_uring_prep_nop(h);
  ::io_uring_sqe_set_data(h, nullptr);
}

void IoBatch::flush() {
  const auto n = static_cast<unsigned>(queued_.size());
  if (n == 0) return;
  int rc;
  do {
    rc = ::io_uring_submit_and_wait(&ring_, n);
  } while (rc == -EINTR);
  ++submits_;
  if (rc < 0) {
    // The entries were not taken: stop batching (the ring goes with the object) and let each
    // caller send by itself.
    spdlog::error("io_uring_submit_and_wait() failed: {}; sending with send() from now on",
                  error_text(rc));
    enabled_ = false;
    ::io_uring_queue_exit(&ring_);
    std::vector<void*> cookies;
    cookies.swap(queued_);
    for (const int fd : closing_) ::close(fd);  // not done by the kernel: no leak
    closing_.clear();
    for (void* cookie : cookies) {
      if (cookie != nullptr && cookie != &g_close_cookie) {
        done_(cookie, -ECANCELED);
      }
    }
    return;
  }
  queued_.clear();
  closing_.clear();
  // Collect a pass of completions, then report them: a report may lead to the next send of
  // its connection, which must not find the ring half-advanced.
  while (::io_uring_cq_ready(&ring_) > 0) {
    constexpr unsigned kPass = 256;
    void* cookies[kPass];
    int results[kPass];
    unsigned count = 0;
    unsigned seen = 0;
    io_uring_cqe* cqe = nullptr;
    unsigned head = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      if (count == kPass) break;
      ++seen;
      void* cookie = ::io_uring_cqe_get_data(cqe);
      if (cookie == nullptr) continue;  // a cancelled send
      if (cookie == &g_close_cookie) {
        if (cqe->res < 0) spdlog::warn("close() failed: {}", error_text(cqe->res));
        continue;
      }
      cookies[count] = cookie;
      results[count] = cqe->res;
      ++count;
    }
    ::io_uring_cq_advance(&ring_, seen);
    completed_ += count;
    for (unsigned i = 0; i < count; ++i) done_(cookies[i], results[i]);
  }
}

}  // namespace ferry::event
