// SharedMemory: an anonymous MAP_SHARED mapping made before fork, so that the master and all
// workers see the same bytes (the accept mutex, later the counters).
#pragma once

#include <cstddef>
#include <system_error>

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
  void release() noexcept;

  [[nodiscard]] void* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

 private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace ferry::event
