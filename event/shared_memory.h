// SharedMemory: a MAP_SHARED mapping made before fork, so that the master and all workers see
// the same bytes (the accept mutex, the counters); a memfd one can also be passed across exec.
#pragma once

#include <cstddef>
#include <string_view>
#include <system_error>

#include "event/syscall_util.h"

namespace ferry::event {

class SharedMemory {
 public:
  SharedMemory() noexcept = default;
  ~SharedMemory();
  SharedMemory(SharedMemory&& other) noexcept;
  SharedMemory& operator=(SharedMemory&& other) noexcept;
  SharedMemory(const SharedMemory&) = delete;
  SharedMemory& operator=(const SharedMemory&) = delete;

  // Maps `size` zeroed bytes, shared with every process forked afterwards.
  std::error_code create(std::size_t size);
  // The same, in a memfd named `name` whose fd (CLOEXEC) is kept: see fd().
  std::error_code create_passable(std::size_t size, const char* name);
  // Maps the memfd `fd` (kept, or closed on failure), which must be named `name` (a prefix of
  // it) and hold `size` bytes: what another process made with create_passable() and passed
  // across exec. The caller hands over only an fd it knows to be such a segment
  // (check_passed_memfd()): a number merely passed may name one of its own.
  std::error_code adopt(UniqueFd fd, std::size_t size, std::string_view name);
  // A memfd mapping whose fd is sealed against any new writable mapping, write(2) and resizing:
  // only this mapping, and the copies forked children inherit, can write it.
  std::error_code create_sealed(std::size_t size, const char* name);
  // In a forked child of a create_sealed() segment: the writable mapping goes, for a read-only
  // one that no mprotect() can make writable (the seal). The new address, or null (logged: the
  // mapping is gone). The fd is closed either way.
  const void* become_read_only() noexcept;
  void release() noexcept;

  [[nodiscard]] void* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  // The memfd of a passable mapping (-1 otherwise), for the next exec to pass on.
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  // A forked child that needs the mapping but not the fd.
  void close_fd() noexcept { fd_.reset(); }

 private:
  std::error_code map(int fd, std::size_t size);
  static std::error_code make_memfd(std::size_t size, const char* name, unsigned flags,
                                    UniqueFd& fd);

  void* data_ = nullptr;
  std::size_t size_ = 0;
  UniqueFd fd_;
  UniqueFd read_only_fd_;  // create_sealed(): the same memfd, opened read-only
};

}  // namespace ferry::event
