// StatsTable's segments: the registry as a sealed memfd (writable in the master's mapping only),
// the counters beside it, a worker's giving up of the writable view, their passing across a
// binary upgrade's exec, and the test-only scribble and garbage.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include <spdlog/spdlog.h>

#include "event/passed_memfd.h"
#include "event/syscall_util.h"
#include "worker/stats/stats_detail.h"
#include "worker/stats/stats_layout.h"

namespace ferry::worker {
namespace {

void* map_shared(int fd, std::size_t size, int prot, const char* what) {
  void* p = ::mmap(nullptr, size, prot, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    spdlog::critical("mmap() of the statistics {} ({} bytes) failed: {}", what, size,
                     event::last_error().message());
    return nullptr;
  }
  return p;
}

event::UniqueFd new_memfd(const char* name, std::size_t size, unsigned flags) {
  event::UniqueFd fd(::memfd_create(name, MFD_CLOEXEC | flags));
  if (!fd || ::ftruncate(fd.get(), static_cast<off_t>(size)) == -1) {
    spdlog::critical("cannot make the statistics segment {} (memfd_create/ftruncate): {}", name,
                     event::last_error().message());
    return {};
  }
  return fd;
}

void unmap(const void* p, std::size_t size) noexcept {
  if (p != nullptr && ::munmap(const_cast<void*>(p), size) == -1) {
    spdlog::error("munmap() of a statistics segment failed: {}", event::last_error().message());
  }
}

// Garbage no counter could hold, and that breaks every relation between them.
constexpr std::uint64_t kGarbage = 0xfeedfacecafebeef;

template <typename T>
void fill(T& object, unsigned char byte) noexcept {
  std::memset(static_cast<void*>(&object), byte, sizeof object);
}

std::atomic<bool> g_refuse_future_write_seal{false};

// Seals the registry against growing, shrinking and any write access made from now on. False
// with errno EINVAL on a kernel without F_SEAL_FUTURE_WRITE (before 5.1): then only the size
// is sealed, and the caller keeps the workers' view read-only in another way.
bool seal_registry(int fd) noexcept {
  if (g_refuse_future_write_seal.exchange(false)) {
    errno = EINVAL;
  } else if (::fcntl(fd, F_ADD_SEALS,
                     F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) == 0) {
    return true;
  }
  const int why = errno;  // the caller decides on the first call's failure, not the second's
  if (why == EINVAL && ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == -1) {
    spdlog::warn("sealing the statistics registry's size (F_ADD_SEALS) failed: {}",
                 event::last_error().message());
  }
  errno = why;
  return false;
}

}  // namespace

// Handing the block's pages back (MADV_REMOVE) zeroes it without committing the pages that no
// worker ever counted on, as storing zeros would; on pages larger than its alignment, or if the
// kernel refuses, the zeros are stored.
void wipe(StatsBlock& b) noexcept {
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto at = reinterpret_cast<std::uintptr_t>(&b);
  if (page != 0 && at % page == 0 && sizeof b % page == 0) {
    if (::madvise(&b, sizeof b, MADV_REMOVE) == 0) return;
    spdlog::warn("madvise(MADV_REMOVE) of a statistics block failed: {}",
                 event::last_error().message());
  }
  using stats_detail::kRelaxed;
  for (auto& p : b.proxies) {
    for (const auto& f : stats_detail::kProxyFields) (p.*f.counter).store(0, kRelaxed);
  }
  for (auto& s : b.servers) {
    for (const auto& f : stats_detail::kServerFields) (s.*f.counter).store(0, kRelaxed);
    s.failed.store(0, kRelaxed);
  }
}

void StatsTable::refuse_future_write_seal_once() noexcept { g_refuse_future_write_seal = true; }

std::unique_ptr<StatsTable> StatsTable::create(std::string_view version, pid_t master_pid,
                                               std::int64_t started) {
  std::unique_ptr<StatsTable> t(new StatsTable);
  // The registry: mapped writable here, then sealed against any further write access
  // (F_SEAL_FUTURE_WRITE): a mapping made after the seal, the read-only one every worker keeps,
  // cannot be made writable by mprotect, nor written through /proc/PID/mem, nor can a worker
  // that still holds the fd map it writable.
  event::UniqueFd registry = new_memfd("ferry-stats-registry", sizeof(Registry), MFD_ALLOW_SEALING);
  if (!registry) return nullptr;
  t->writable_ = static_cast<Registry*>(
      map_shared(registry.get(), sizeof(Registry), PROT_READ | PROT_WRITE, "registry"));
  if (t->writable_ == nullptr) return nullptr;
  // Without the seal (Linux < 5.1), the read-only view comes from a read-only open of the
  // memfd: a shared mapping of a file not open for writing can never be made writable (mprotect
  // and /proc/PID/mem are refused as with the seal), and no worker holds a writable fd of it.
  event::UniqueFd read_only;
  if (!seal_registry(registry.get())) {
    if (errno != EINVAL) {
      spdlog::critical("sealing the statistics registry (F_ADD_SEALS) failed: {}",
                       event::last_error().message());
      return nullptr;
    }
    const std::string path = "/proc/self/fd/" + std::to_string(registry.get());
    read_only.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!read_only) {
      spdlog::critical("the kernel refuses F_SEAL_FUTURE_WRITE, and open({}) failed: {}", path,
                       event::last_error().message());
      return nullptr;
    }
    spdlog::warn(
        "the kernel refuses F_SEAL_FUTURE_WRITE (Linux < 5.1): the workers' view of the "
        "statistics registry is mapped from a read-only descriptor instead");
  }
  t->registry_ =
      static_cast<const Registry*>(map_shared(read_only ? read_only.get() : registry.get(),
                                              sizeof(Registry), PROT_READ, "registry (read-only)"));
  if (t->registry_ == nullptr) return nullptr;
  event::UniqueFd counters = new_memfd("ferry-stats-counters", sizeof(Counters), 0);
  if (!counters) return nullptr;
  t->counters_ = static_cast<Counters*>(
      map_shared(counters.get(), sizeof(Counters), PROT_READ | PROT_WRITE, "counters"));
  if (t->counters_ == nullptr) return nullptr;

  Registry::MasterBlock& m = t->writable_->master;
  const std::size_t n = std::min(version.size(), kMaxVersion - 1);
  std::memcpy(m.version, version.data(), n);
  m.version[n] = '\0';
  m.pid.store(master_pid, std::memory_order_relaxed);
  m.started.store(started, std::memory_order_relaxed);
  // Kept (close-on-exec) for a binary upgrade to pass on.
  t->registry_fd_ = event::UniqueFd(registry.release());
  t->counters_fd_ = event::UniqueFd(counters.release());
  return t;
}

StatsTable::~StatsTable() {
  unmap(writable_, sizeof(Registry));
  unmap(registry_, sizeof(Registry));
  unmap(counters_, sizeof(Counters));
}

bool StatsTable::enter_worker() noexcept {
  // A worker has the mappings it needs; the fds are for the master's next binary upgrade.
  registry_fd_.reset();
  counters_fd_.reset();
  if (writable_ == nullptr) return true;
  if (::munmap(writable_, sizeof(Registry)) == -1) {
    spdlog::critical("munmap() of the writable statistics registry failed: {}",
                     event::last_error().message());
    return false;
  }
  writable_ = nullptr;
  return true;
}

std::string StatsTable::pass_to_exec() const noexcept {
  if (!registry_fd_ || !counters_fd_) return "";
  for (const int fd : {registry_fd_.get(), counters_fd_.get()}) {
    if (::fcntl(fd, F_SETFD, 0) == -1) {
      spdlog::error("fcntl({}, F_SETFD, 0) for a statistics segment failed: {}", fd,
                    event::last_error().message());
      // Not passed, so close-on-exec again: a segment the new master is not told of would
      // stay open in it and in all its workers.
      for (const int again : {registry_fd_.get(), counters_fd_.get()}) {
        if (::fcntl(again, F_SETFD, FD_CLOEXEC) == -1) {
          spdlog::error("fcntl({}, F_SETFD, FD_CLOEXEC) failed: {}", again,
                        event::last_error().message());
        }
      }
      return "";
    }
  }
  return std::to_string(registry_fd_.get()) + ";" + std::to_string(counters_fd_.get());
}

std::string StatsTable::garbage_for_exec() noexcept {
  // Not close-on-exec: they are for the exec that follows. Deterministic garbage (xorshift),
  // with the seqlock words even so that a reader goes on to read all the rest.
  event::UniqueFd registry = new_memfd("ferry-stats-garbage", sizeof(Registry), 0);
  event::UniqueFd counters = new_memfd("ferry-stats-garbage", sizeof(Counters), 0);
  if (!registry || !counters) return "";
  std::uint64_t x = 0x9e3779b97f4a7c15;
  for (const auto& [fd, size] :
       {std::pair{registry.get(), sizeof(Registry)}, std::pair{counters.get(), sizeof(Counters)}}) {
    void* p = map_shared(fd, size, PROT_READ | PROT_WRITE, "garbage");
    if (p == nullptr) return "";
    auto* words = static_cast<std::uint64_t*>(p);
    for (std::size_t i = 0; i < size / 8; ++i) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      // Half the words small: counts under the ceiling, lengths and pids that look plausible.
      words[i] = (x & 1) != 0 ? x : (x >> 24) & 0xffff;
    }
    if (size == sizeof(Registry)) {
      auto* r = static_cast<Registry*>(p);
      r->fold_seq.store(0);
      r->master.reload_seq.store(0);
    }
    unmap(p, size);
  }
  for (const int fd : {registry.get(), counters.get()}) {
    if (::fcntl(fd, F_SETFD, 0) == -1) return "";
  }
  return std::to_string(registry.release()) + ";" + std::to_string(counters.release());
}

std::unique_ptr<StatsTable> StatsTable::open_passed(event::UniqueFd registry,
                                                    event::UniqueFd counters) {
  // Another binary's layout, or not a segment at all: a mapping past its end would fault. The
  // garbage the test hook passes is named "ferry-stats-garbage".
  for (const auto& [fd, size] :
       {std::pair{registry.get(), sizeof(Registry)}, std::pair{counters.get(), sizeof(Counters)}}) {
    if (const auto check = event::check_passed_memfd(fd, {"ferry-stats-", size}); !check.ok()) {
      spdlog::error("the old master's statistics are not taken: {}", check.reason);
      return nullptr;
    }
  }
  std::unique_ptr<StatsTable> t(new StatsTable);
  t->registry_ = static_cast<const Registry*>(
      map_shared(registry.get(), sizeof(Registry), PROT_READ, "old registry"));
  if (t->registry_ == nullptr) return nullptr;
  // Read-only here too: nothing of it is ours to write.
  t->counters_ = static_cast<Counters*>(
      map_shared(counters.get(), sizeof(Counters), PROT_READ, "old counters"));
  if (t->counters_ == nullptr) return nullptr;
  return t;
}

StatsTable::Segment StatsTable::registry_segment() const noexcept {
  return {registry_, sizeof(Registry)};
}
StatsTable::Segment StatsTable::counters_segment() const noexcept {
  return {counters_, sizeof(Counters)};
}

std::string StatsTable::scribble(std::size_t slot) noexcept {
  std::string what;
  if (slot < kSlots) {
    StatsBlock& b = counters_->slots[slot];
    const std::uint32_t proxies = proxies_known();
    const std::uint32_t servers = servers_known();
    // Only the registered entries' pages: the whole block would commit 90 KiB for nothing.
    for (std::uint32_t p = 0; p < proxies; ++p) {
      fill(b.proxies[p], 0xee);
      b.proxies[p].accepted.store(3);  // fewer than it handled, fewer than are open
    }
    for (std::uint32_t s = 0; s < servers; ++s) fill(b.servers[s], 0xee);
    counters_->gauges[slot].connections.store(kGarbage);
    what += "scribbled over its counters";
  }
  for (auto& h : counters_->health) h.store(kGarbage);
  // What the master must never have trusted: counts, lengths and seqlock words.
  auto* registry = const_cast<Registry*>(registry_);
  if (::mprotect(registry, sizeof(Registry), PROT_READ | PROT_WRITE) == -1) {
    return what + "; the registry stays read-only (mprotect: " + std::strerror(errno) + ")";
  }
  registry->proxy_count.store(0xffffffff);
  registry->server_count.store(0xffffffff);
  registry->fold_seq.store(1);
  registry->master.reload_seq.store(1);
  registry->master.error_length.store(0xffffffff);
  for (auto& p : registry->proxies) p.length = 0xffff;
  for (auto& s : registry->servers) s.upstream_length = s.address_length = 0xffff;
  return what + "; and over the registry, which it could make writable";
}

}  // namespace ferry::worker
