// IoBatch: liburing setup, queueing with MSG_DONTWAIT, one submit-and-wait per flush, reports in
// queue order from entries that cancel() can withdraw at any time before.
#include "event/io_batch.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <system_error>
#include <utility>

#include <spdlog/spdlog.h>

namespace ferry::event {

namespace {
std::string error_text(int negative_errno) {
  return std::system_category().message(-negative_errno);
}
}  // namespace

IoBatch::~IoBatch() {
  // Closes queued, never submitted: done here, not leaked.
  for (unsigned i = 0; i < count_; ++i) {
    if (entries_[i].fd >= 0) ::close(entries_[i].fd);
  }
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
  capacity_ = ring_.sq.ring_entries;
  entries_ = std::make_unique<Entry[]>(capacity_);
  enabled_ = true;
  return true;
}

IoBatch::Entry* IoBatch::next_entry() {
  if (!enabled_ || reporting_) return nullptr;
  io_uring_sqe* sqe = count_ < capacity_ ? ::io_uring_get_sqe(&ring_) : nullptr;
  if (sqe == nullptr) {
    flush();
    if (!enabled_) return nullptr;  // the flush failed and took the ring down
    sqe = ::io_uring_get_sqe(&ring_);
    if (sqe == nullptr) return nullptr;
  }
  Entry& e = entries_[count_++];
  e = Entry{nullptr, sqe, -1, -ECANCELED};
  ::io_uring_sqe_set_data(sqe, &e);
  return &e;
}

IoBatch::Handle IoBatch::queue_send(int fd, std::span<const std::byte> data, void* cookie,
                                    bool more) {
  Entry* e = next_entry();
  if (e == nullptr) return nullptr;
  ::io_uring_prep_send(e->sqe, fd, data.data(), data.size(),
                       MSG_DONTWAIT | MSG_NOSIGNAL | (more ? MSG_MORE : 0));
  ::io_uring_sqe_set_data(e->sqe, e);
  e->cookie = cookie;
  return e;
}

IoBatch::Handle IoBatch::queue_recv(int fd, std::span<std::byte> buffer, void* cookie) {
  Entry* e = next_entry();
  if (e == nullptr) return nullptr;
  ::io_uring_prep_recv(e->sqe, fd, buffer.data(), buffer.size(), MSG_DONTWAIT);
  ::io_uring_sqe_set_data(e->sqe, e);
  e->cookie = cookie;
  return e;
}

bool IoBatch::queue_close(int fd) {
  Entry* e = next_entry();
  if (e == nullptr) return false;
  ::io_uring_prep_close(e->sqe, fd);
  ::io_uring_sqe_set_data(e->sqe, e);
  e->fd = fd;
  return true;
}

void IoBatch::cancel(Handle h) noexcept {
  if (h == nullptr) return;
  h->cookie = nullptr;
  if (h->sqe != nullptr) {
    ::io_uring_prep_nop(h->sqe);
    ::io_uring_sqe_set_data(h->sqe, h);
  }
}

int IoBatch::submit(unsigned n) {
  if (fail_next_ != 0) {
    const int err = fail_next_;
    fail_next_ = 0;
    return -err;
  }
  if (take_next_ != 0) {
    // liburing hands the kernel the SQEs up to sqe_tail: the last n - k stay behind, as those
    // after an entry the kernel refused do.
    const unsigned k = std::min(take_next_ - 1, n);
    take_next_ = 0;
    ring_.sq.sqe_tail -= n - k;
    n = k;
  }
  int rc;
  do {
    if (cut_next_ != 0) {
      cut_wait_ = std::exchange(cut_next_, 0);
      rc = ::io_uring_submit(&ring_);  // no wait: collect() finds none gathered yet
    } else {
      rc = ::io_uring_submit_and_wait(&ring_, n);
    }
  } while (rc == -EINTR);
  return rc;
}

void IoBatch::wait_more(unsigned got, unsigned n) {
  int rc;
  do {
    io_uring_cqe* cqe = nullptr;
    rc = cut_wait_ != 0 ? -std::exchange(cut_wait_, 0) : ::io_uring_wait_cqe(&ring_, &cqe);
  } while (rc == -EINTR);
  if (rc >= 0) return;
  // The kernel still has n - got operations whose buffers and owners (sessions) the caller
  // would free once told: neither reporting them nor tearing the ring down is safe while they
  // may still run. The process ends; the master starts another worker.
  spdlog::critical(
      "io_uring_wait_cqe() failed with {} of {} operations still in the kernel: {}; exiting",
      n - got, n, error_text(rc));
  ::_exit(kBrokenRingExit);
}

void IoBatch::collect(unsigned n) {
  unsigned got = 0;
  while (got < n) {
    unsigned seen = 0;
    if (cut_wait_ == 0) {
      io_uring_cqe* cqe = nullptr;
      unsigned head = 0;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        static_cast<Entry*>(::io_uring_cqe_get_data(cqe))->result = cqe->res;
        ++seen;
      }
      ::io_uring_cq_advance(&ring_, seen);
    }
    got += seen;
    if (got >= n) break;
    // A signal cut the wait short: the rest are still the kernel's, with their buffers.
    wait_more(got, n);
  }
}

void IoBatch::stop(int rc, unsigned submitted, unsigned n) {
  if (rc < 0) {
    spdlog::error("io_uring_submit_and_wait() failed: {}; sending with send() from now on",
                  error_text(rc));
  } else {
    spdlog::error("io_uring took {} of {} operations; sending with send() from now on", submitted,
                  n);
  }
  enabled_ = false;
  ::io_uring_queue_exit(&ring_);  // what the kernel did not take goes with the ring
  for (unsigned i = submitted; i < n; ++i) {
    Entry& e = entries_[i];
    e.result = -ECANCELED;
    if (e.fd >= 0) {
      ::close(e.fd);  // not done by the kernel: no leak
      e.fd = -1;
    }
  }
}

void IoBatch::flush() {
  const unsigned n = count_;
  if (n == 0 || reporting_) return;
  const int rc = submit(n);
  ++submits_;
  const unsigned submitted = rc < 0 ? 0U : std::min(static_cast<unsigned>(rc), n);
  collect(submitted);
  for (unsigned i = 0; i < n; ++i) entries_[i].sqe = nullptr;  // the kernel's or gone
  if (submitted < n) stop(rc, submitted, n);

  // Reported from the entries, not from a copy, so that a completion that cancels another
  // operation of this flush is heard.
  count_ = 0;
  reporting_ = true;
  for (unsigned i = 0; i < n; ++i) {
    const Entry& e = entries_[i];
    if (e.fd >= 0) {
      if (e.result < 0) spdlog::warn("close() failed: {}", error_text(e.result));
    } else if (e.cookie != nullptr) {
      ++completed_;
      done_(e.cookie, e.result);
    }
  }
  reporting_ = false;
}

}  // namespace ferry::event
