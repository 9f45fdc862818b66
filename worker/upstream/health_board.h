// HealthBoard: the verdicts of the active health checks, in shared memory mapped by the master
// before it forks a generation of workers. One worker writes them; every worker reads them, so
// all agree on which servers are up. One slot per server, in configuration order.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>

#include "conf/config.h"

namespace ferry::worker {

struct ServerHealth {
  std::atomic<std::uint8_t> down{0};
  std::atomic<std::uint64_t> checks{0};
  std::atomic<std::uint64_t> failures{0};
  std::atomic<std::uint64_t> passes{0};  // checks that passed: each clears passive failures
};

class HealthBoard {
 public:
  // Bytes needed for `cfg`'s servers (at least one slot).
  static std::size_t bytes_for(const conf::Config& cfg) {
    std::size_t n = 0;
    for (const auto& u : cfg.upstreams) n += u.servers.size();
    return sizeof(ServerHealth) * (n == 0 ? 1 : n);
  }
  // Lays the slots out in `memory` (zeroed shared pages).
  static HealthBoard* create(void* memory, const conf::Config& cfg) {
    auto* slots = static_cast<ServerHealth*>(memory);
    std::size_t n = 0;
    for (const auto& u : cfg.upstreams) n += u.servers.size();
    for (std::size_t i = 0; i < n; ++i) new (&slots[i]) ServerHealth;
    return reinterpret_cast<HealthBoard*>(memory);
  }
  // The slot of server `server` of upstream `upstream` (indices into cfg).
  ServerHealth& at(const conf::Config& cfg, std::size_t upstream, std::size_t server) {
    std::size_t base = 0;
    for (std::size_t u = 0; u < upstream; ++u) base += cfg.upstreams[u].servers.size();
    return reinterpret_cast<ServerHealth*>(this)[base + server];
  }
};

}  // namespace ferry::worker
