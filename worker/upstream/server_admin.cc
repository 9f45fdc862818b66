// ServerAdminTable: the master's writes and the workers' whole-entry reads (a sequence lock per
// entry), and the admin states' names.
#include "worker/upstream/server_admin.h"

#include <cstring>
#include <new>

namespace ferry::worker {
namespace {

constexpr std::string_view kStateNames[] = {"ready", "drain", "maint", "removed"};

// A name field as text: up to its first NUL (a worker must not trust the master's bytes to end
// in one any more than the master trusts a worker's).
std::string name_of(const char* bytes, std::size_t n) {
  return std::string(bytes, ::strnlen(bytes, n));
}

template <typename T>
T load(const T& field) noexcept {
  return std::atomic_ref<T>(const_cast<T&>(field)).load(std::memory_order_relaxed);
}
template <typename T>
void store(T& field, T value) noexcept {
  std::atomic_ref<T>(field).store(value, std::memory_order_relaxed);
}

}  // namespace

std::string_view to_string(AdminState s) noexcept {
  const auto i = static_cast<std::size_t>(s);
  return i < std::size(kStateNames) ? kStateNames[i] : "ready";
}

std::optional<AdminState> admin_state_from(std::string_view text) noexcept {
  for (std::size_t i = 0; i < std::size(kStateNames); ++i) {
    if (kStateNames[i] == text) return static_cast<AdminState>(i);
  }
  return std::nullopt;
}

std::size_t ServerAdminTable::bytes() noexcept { return sizeof(ServerAdminTable); }

ServerAdminTable* ServerAdminTable::create(void* memory) noexcept {
  return new (memory) ServerAdminTable;
}

bool ServerAdminTable::publish(const std::vector<AdminRecord>& records) noexcept {
  if (records.size() > kEntries) return false;
  for (const AdminRecord& r : records) {
    if (r.upstream.size() >= kNameBytes || r.server.size() >= kNameBytes) return false;
  }
  const std::size_t before = count_.load(std::memory_order_relaxed);
  for (std::size_t i = 0; i < kEntries && (i < records.size() || i < before); ++i) {
    Entry& e = entries_[i];
    const std::uint32_t seq = e.seq.load(std::memory_order_relaxed);
    e.seq.store(seq + 1, std::memory_order_relaxed);  // odd: being written
    std::atomic_thread_fence(std::memory_order_release);
    if (i < records.size()) {
      const AdminRecord& r = records[i];
      store(e.used, std::uint8_t{1});
      store(e.state, static_cast<std::uint8_t>(r.state));
      store(e.added, std::uint8_t{r.added});
      store(e.backup, std::uint8_t{r.backup});
      store(e.weight, std::int32_t{r.weight});
      store(e.kill_epoch, r.kill_epoch);
      store(e.slow_start_ms, r.slow_start_ms);
      store(e.ready_since_ms, r.ready_since_ms);
      for (std::size_t k = 0; k < kNameBytes; ++k) {
        store(e.upstream[k], k < r.upstream.size() ? r.upstream[k] : '\0');
        store(e.server[k], k < r.server.size() ? r.server[k] : '\0');
      }
    } else {
      store(e.used, std::uint8_t{0});
    }
    e.seq.store(seq + 2, std::memory_order_release);
  }
  count_.store(static_cast<std::uint32_t>(records.size()), std::memory_order_relaxed);
  version_.fetch_add(1, std::memory_order_release);
  return true;
}

std::vector<AdminRecord> ServerAdminTable::read() const {
  std::vector<AdminRecord> out;
  const std::size_t n = std::min<std::size_t>(count_.load(std::memory_order_acquire), kEntries);
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const Entry& e = entries_[i];
    for (int attempt = 0; attempt < 1000; ++attempt) {
      const std::uint32_t before = e.seq.load(std::memory_order_acquire);
      if (before % 2 != 0) continue;
      AdminRecord r;
      const bool used = load(e.used) != 0;
      const std::uint8_t state = load(e.state);
      r.state = state <= static_cast<std::uint8_t>(AdminState::removed)
                    ? static_cast<AdminState>(state)
                    : AdminState::ready;
      r.added = load(e.added) != 0;
      r.backup = load(e.backup) != 0;
      r.weight = load(e.weight);
      r.kill_epoch = load(e.kill_epoch);
      r.slow_start_ms = load(e.slow_start_ms);
      r.ready_since_ms = load(e.ready_since_ms);
      char upstream[kNameBytes];
      char server[kNameBytes];
      for (std::size_t k = 0; k < kNameBytes; ++k) {
        upstream[k] = load(e.upstream[k]);
        server[k] = load(e.server[k]);
      }
      std::atomic_thread_fence(std::memory_order_acquire);
      if (e.seq.load(std::memory_order_relaxed) != before) continue;
      if (!used) break;
      r.upstream = name_of(upstream, kNameBytes);
      r.server = name_of(server, kNameBytes);
      if (r.weight < 0) r.weight = 0;
      out.push_back(std::move(r));
      break;
    }
  }
  return out;
}

}  // namespace ferry::worker
