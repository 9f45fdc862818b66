// Syscall helpers every part of ferry uses: EINTR retry, all bytes of a read or write, errno as
// std::error_code, and UniqueFd, the owner of every file descriptor.
#pragma once

#include <cerrno>
#include <cstddef>
#include <system_error>
#include <utility>

namespace ferry::event {

// Runs `call` again while it fails with EINTR; returns its last result (errno kept).
template <typename Call>
auto retry_eintr(Call&& call) {
  for (;;) {
    auto result = call();
    if (result != -1 || errno != EINTR) return result;
  }
}

// How all_bytes() ended: every byte moved (complete), or `error` from the call that failed, or
// (error empty) a call that moved none (an end of file, a write that took nothing).
struct AllBytes {
  bool complete = false;
  std::size_t done = 0;
  std::error_code error;
};

// Moves `size` bytes in calls of `step(done, left)`, a read or write of at most `left` bytes
// from offset `done` that returns how many it moved (-1 and errno on failure): called again
// after a short count or EINTR, until all are moved or a call fails or moves none.
template <typename Step>
AllBytes all_bytes(std::size_t size, Step&& step) {
  AllBytes r;
  while (r.done < size) {
    const auto n = retry_eintr([&] { return step(r.done, size - r.done); });
    if (n == -1) r.error = {errno, std::system_category()};
    if (n <= 0) return r;
    r.done += static_cast<std::size_t>(n);
  }
  r.complete = true;
  return r;
}

// The current errno as an error_code; message() gives strerror's text.
inline std::error_code last_error() noexcept { return {errno, std::system_category()}; }
inline std::error_code errno_code(int err) noexcept { return {err, std::system_category()}; }

// Owns one file descriptor and closes it when destroyed or reset.
class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  ~UniqueFd() { reset(); }

  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  [[nodiscard]] int get() const noexcept { return fd_; }
  [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }
  [[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }

  // Closes the held fd (if any) and takes `fd`. close() is not retried on EINTR: Linux has
  // released the descriptor either way, and a retry could close someone else's.
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

}  // namespace ferry::event
