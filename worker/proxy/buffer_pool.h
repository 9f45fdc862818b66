// BufferPool: the relay's per-direction buffers, taken only while bytes are in flight and given
// back when drained, so an idle session holds none. A few free buffers per size are kept for
// reuse; the rest go back to the allocator.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <vector>

namespace ferry::worker {

class BufferPool {
 public:
  explicit BufferPool(std::size_t keep_per_size = 64) : keep_(keep_per_size) {}

  std::unique_ptr<std::byte[]> take(std::size_t size) {
    auto& free = free_[size];
    if (free.empty()) return std::make_unique<std::byte[]>(size);
    auto buf = std::move(free.back());
    free.pop_back();
    return buf;
  }

  void give(std::unique_ptr<std::byte[]> buf, std::size_t size) {
    if (!buf) return;
    auto& free = free_[size];
    if (free.size() < keep_) free.push_back(std::move(buf));
  }

  // Free buffers kept of `size` (each size keeps its own list).
  [[nodiscard]] std::size_t free_of(std::size_t size) const {
    const auto it = free_.find(size);
    return it == free_.end() ? 0 : it->second.size();
  }
  [[nodiscard]] std::size_t free_count() const {
    std::size_t n = 0;
    for (const auto& [size, list] : free_) n += list.size();
    return n;
  }

 private:
  std::size_t keep_;
  std::map<std::size_t, std::vector<std::unique_ptr<std::byte[]>>> free_;
};

}  // namespace ferry::worker
