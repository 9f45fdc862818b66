// SharedMemory: mmap/munmap of anonymous or memfd shared pages.
#include "event/shared_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>
#include <utility>

#include <spdlog/spdlog.h>

#include "event/passed_memfd.h"
#include "event/syscall_util.h"

namespace ferry::event {

SharedMemory::~SharedMemory() { release(); }

SharedMemory::SharedMemory(SharedMemory&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      fd_(std::move(other.fd_)),
      read_only_fd_(std::move(other.read_only_fd_)) {}

SharedMemory& SharedMemory::operator=(SharedMemory&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    fd_ = std::move(other.fd_);
    read_only_fd_ = std::move(other.read_only_fd_);
  }
  return *this;
}

std::error_code SharedMemory::create(std::size_t size) {
  release();
  // NORESERVE: a segment sized for the worst case (the per-client table's shares) is charged
  // against the commit limit page by page as it is touched, not all at once.
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    const auto ec = last_error();
    spdlog::critical("mmap(MAP_SHARED|MAP_ANONYMOUS, {}) failed: {}", size, ec.message());
    return ec;
  }
  data_ = p;
  size_ = size;
  return {};
}

std::error_code SharedMemory::map(int fd, std::size_t size) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
  if (p == MAP_FAILED) {
    const auto ec = last_error();
    spdlog::critical("mmap(MAP_SHARED, memfd {}, {}) failed: {}", fd, size, ec.message());
    return ec;
  }
  data_ = p;
  size_ = size;
  return {};
}

// A memfd of `size` bytes (logged when it cannot be made).
std::error_code SharedMemory::make_memfd(std::size_t size, const char* name, unsigned flags,
                                         UniqueFd& fd) {
  fd.reset(::memfd_create(name, MFD_CLOEXEC | flags));
  if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(size)) == -1) {
    const auto ec = last_error();
    spdlog::critical("cannot make the shared segment {} (memfd_create/ftruncate): {}", name,
                     ec.message());
    return ec;
  }
  return {};
}

std::error_code SharedMemory::create_passable(std::size_t size, const char* name) {
  release();
  UniqueFd fd;
  if (auto ec = make_memfd(size, name, 0, fd)) return ec;
  if (auto ec = map(fd.get(), size)) return ec;
  fd_ = std::move(fd);
  return {};
}

std::error_code SharedMemory::create_sealed(std::size_t size, const char* name) {
  release();
  UniqueFd fd;
  if (auto ec = make_memfd(size, name, MFD_ALLOW_SEALING, fd)) return ec;
  if (auto ec = map(fd.get(), size)) return ec;
  // From here on only this mapping (and its copies in forked children, which drop theirs for a
  // read-only one) can write: no new writable mapping, no write(2), no resize. Kernels before 5.1
  // have no F_SEAL_FUTURE_WRITE: then the read-only descriptor below is what keeps children out.
  if (::fcntl(fd.get(), F_ADD_SEALS,
              F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) == -1) {
    const auto ec = last_error();
    if (ec.value() != EINVAL ||
        ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == -1) {
      spdlog::critical("cannot seal the shared segment {}: {}", name, last_error().message());
      release();
      return ec;
    }
    spdlog::warn(
        "the shared segment {} is sealed without F_SEAL_FUTURE_WRITE ({}): workers map "
        "it through a read-only descriptor",
        name, ec.message());
  }
  // A descriptor opened read-only: a shared mapping of it can never be made writable, whatever
  // the kernel's seals.
  const std::string self = "/proc/self/fd/" + std::to_string(fd.get());
  read_only_fd_.reset(::open(self.c_str(), O_RDONLY | O_CLOEXEC));
  if (!read_only_fd_) {
    spdlog::warn(
        "open({}, O_RDONLY) failed: {}; workers map the segment {} through its sealed "
        "descriptor",
        self, last_error().message(), name);
  }
  fd_ = std::move(fd);
  return {};
}

const void* SharedMemory::become_read_only() noexcept {
  if (!fd_ || data_ == nullptr) return nullptr;
  const int from = read_only_fd_ ? read_only_fd_.get() : fd_.get();
  void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, from, 0);
  if (p == MAP_FAILED) {
    spdlog::error("mmap(PROT_READ, memfd {}, {}) failed: {}", fd_.get(), size_,
                  last_error().message());
    release();
    return nullptr;
  }
  const std::size_t size = size_;
  release();  // the writable mapping and the fd
  data_ = p;
  size_ = size;
  return p;
}

std::error_code SharedMemory::adopt(UniqueFd fd, std::size_t size, std::string_view name) {
  release();
  // Another binary's layout, or not a segment at all: a mapping past its end would fault.
  if (const auto check = check_passed_memfd(fd.get(), {name, size}); !check.ok()) {
    spdlog::error("the passed shared segment {} is not taken: {}", name, check.reason);
    return std::make_error_code(std::errc::invalid_argument);
  }
  if (::fcntl(fd.get(), F_SETFD, FD_CLOEXEC) == -1) {
    const auto ec = last_error();
    spdlog::error("fcntl({}, F_SETFD, FD_CLOEXEC) failed: {}", fd.get(), ec.message());
    return ec;
  }
  if (auto ec = map(fd.get(), size)) return ec;
  fd_ = std::move(fd);
  return {};
}

void SharedMemory::release() noexcept {
  fd_.reset();
  read_only_fd_.reset();
  if (data_ != nullptr && ::munmap(data_, size_) == -1) {
    spdlog::error("munmap({}) failed: {}", size_, last_error().message());
  }
  data_ = nullptr;
  size_ = 0;
}

}  // namespace ferry::event
