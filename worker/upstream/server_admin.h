// ServerAdmin: the operator's runtime settings of upstream servers (admin state, weight, servers
// added at run time), in shared memory the master writes and the workers only read.
// The master maps it before it forks; each worker remaps its view read-only, so no worker can
// change what the others (or the master) see; the master never reads it back.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::worker {

// What an operator allows a server to do. `ready`: as configured; `drain`: no new sessions,
// the open ones go on; `maint`: no new sessions and no health checks (its sessions may be
// killed); `removed`: taken out (`del server`): no new sessions, the open ones drain, and it is
// no longer shown once none is left.
enum class AdminState : std::uint8_t { ready = 0, drain = 1, maint = 2, removed = 3 };

[[nodiscard]] std::string_view to_string(AdminState s) noexcept;
[[nodiscard]] std::optional<AdminState> admin_state_from(std::string_view text) noexcept;

// One server's runtime settings, as a worker reads it (a copy: the shared entry may change
// under it).
struct AdminRecord {
  std::string upstream;  // the upstream's name
  std::string server;    // the server's address as configured (or as added)
  AdminState state = AdminState::ready;
  int weight = 0;                   // 0: the configured weight
  bool added = false;               // added at run time: `server` is a literal address
  bool backup = false;              // added: a backup server
  std::int64_t slow_start_ms = 0;   // added: its slow start
  std::int64_t ready_since_ms = 0;  // steady clock ms when it last became ready (0: never)
  std::uint32_t kill_epoch = 0;     // grows each time its sessions are to be killed
};

// The table: a header and kEntries fixed entries, each guarded by a sequence word (odd while
// the master writes it) so that a reader never takes half an update.
class ServerAdminTable {
 public:
  static constexpr std::size_t kEntries = 1024;
  static constexpr std::size_t kNameBytes = 112;

  // Bytes to map.
  static std::size_t bytes() noexcept;
  // Lays the table out in zeroed shared memory.
  static ServerAdminTable* create(void* memory) noexcept;

  // --- Master only.
  // Writes `records` as the whole table (entries past them are cleared) and bumps the version.
  // False when they do not fit (kEntries, or a name longer than kNameBytes - 1): nothing written.
  bool publish(const std::vector<AdminRecord>& records) noexcept;

  // --- Workers (read only).
  [[nodiscard]] std::uint64_t version() const noexcept {
    return version_.load(std::memory_order_acquire);
  }
  // Every record in use, each read whole; entries a reader cannot read whole within a bound of
  // retries (a master writing for ever) are left out.
  [[nodiscard]] std::vector<AdminRecord> read() const;

 private:
  struct Entry {
    std::atomic<std::uint32_t> seq{0};
    std::uint8_t used = 0;
    std::uint8_t state = 0;
    std::uint8_t added = 0;
    std::uint8_t backup = 0;
    std::int32_t weight = 0;
    std::uint32_t kill_epoch = 0;
    std::int64_t slow_start_ms = 0;
    std::int64_t ready_since_ms = 0;
    std::array<char, kNameBytes> upstream{};
    std::array<char, kNameBytes> server{};
  };
  static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

  std::atomic<std::uint64_t> version_{0};
  std::atomic<std::uint32_t> count_{0};
  Entry entries_[kEntries];
};

}  // namespace ferry::worker
