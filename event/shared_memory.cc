// SharedMemory: mmap/munmap of anonymous shared pages.
#include "event/shared_memory.h"

#include <sys/mman.h>

#include <utility>

#include <spdlog/spdlog.h>

#include "event/syscall_util.h"

namespace ferry::event {

SharedMemory::~SharedMemory() { release(); }

SharedMemory::SharedMemory(SharedMemory&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

SharedMemory& SharedMemory::operator=(SharedMemory&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
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

void SharedMemory::release() noexcept {
  if (data_ != nullptr && ::munmap(data_, size_) == -1) {
    spdlog::error("munmap({}) failed: {}", size_, last_error().message());
  }
  data_ = nullptr;
  size_ = 0;
}

}  // namespace ferry::event
