// UpgradeState: the memfd page of a binary upgrade (create, pass across exec, map, read).
#include "master/upgrade_state.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <new>
#include <string>

#include <spdlog/spdlog.h>

#include "event/passed_memfd.h"

namespace ferry::master {
namespace {

// One page: the smallest a mapping can be anyway.
constexpr std::size_t kSize = 4096;
static_assert(std::atomic<std::uint32_t>::is_always_lock_free,
              "the word is shared between processes: it must not need a lock");

// "FRYS" and the layout below: a new master maps only a page it knows how to read.
constexpr std::uint32_t kMagic = 0x46525953;
constexpr std::uint32_t kLayoutVersion = 1;

}  // namespace

// The state word stays first, where the binaries before the magic word read it: one of them
// started by this master's upgrade (a rollback to an older release) still reads the state right.
// A page from such a binary has zeroes where the magic is (ftruncate() zeroes the memfd).
// `new_master` came later within the same layout version: zero means "nothing said", which is
// what a binary that does not know it leaves there, and one that does not know it never reads it.
struct UpgradeState::Page {
  std::atomic<std::uint32_t> state;
  std::uint32_t magic;
  std::uint32_t version;
  std::atomic<std::uint32_t> new_master;
};

const char* to_string(OldMasterState state) noexcept {
  switch (state) {
    case OldMasterState::serving: return "serving";
    case OldMasterState::winched: return "workers stopped (WINCH)";
    case OldMasterState::stopping: return "stopping";
    case OldMasterState::unknown: break;
  }
  return "unknown";
}

UpgradeState::~UpgradeState() { release(); }

std::error_code UpgradeState::map(int fd) {
  void* p = ::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    const auto ec = event::last_error();
    spdlog::error("mmap() of the upgrade state page failed: {}", ec.message());
    return ec;
  }
  page_ = static_cast<Page*>(p);
  return {};
}

void UpgradeState::take_test_hook() noexcept {
  bad_magic_ = std::getenv(kBadMagicVariable) != nullptr;
  ::unsetenv(kBadMagicVariable);
}

std::error_code UpgradeState::create(OldMasterState state) {
  static_assert(sizeof(Page) <= kSize);
  release();
  event::UniqueFd fd(::memfd_create("ferry-upgrade-state", MFD_CLOEXEC));
  if (!fd || ::ftruncate(fd.get(), kSize) == -1) {
    const auto ec = event::last_error();
    spdlog::error("cannot make the upgrade state page (memfd_create/ftruncate): {}", ec.message());
    return ec;
  }
  if (auto ec = map(fd.get())) return ec;
  new (&page_->state) std::atomic<std::uint32_t>;
  new (&page_->new_master) std::atomic<std::uint32_t>(0);
  page_->magic = bad_magic_ ? ~kMagic : kMagic;
  page_->version = kLayoutVersion;
  fd_ = std::move(fd);
  publish(state);
  return {};
}

void UpgradeState::publish(OldMasterState state) noexcept {
  if (page_ != nullptr) {
    page_->state.store(static_cast<std::uint32_t>(state), std::memory_order_release);
  }
}

// A binary from before this page (or one that does not know kVariable) keeps the fd open, its
// FD_CLOEXEC cleared, for good: nothing here can tell which binary the exec starts, and the
// leak is one memfd page per upgrade, closed when that master exits.
void UpgradeState::pass_to_exec() const noexcept {
  if (!fd_) return;
  if (::fcntl(fd_.get(), F_SETFD, 0) == -1) {
    spdlog::error("fcntl({}, F_SETFD, 0) for the upgrade state page failed: {}", fd_.get(),
                  event::last_error().message());
    return;
  }
  ::setenv(kVariable, std::to_string(fd_.get()).c_str(), 1);
}

bool UpgradeState::adopt() {
  const char* value = std::getenv(kVariable);
  if (value == nullptr) return false;
  const long number = std::strtol(value, nullptr, 10);
  ::unsetenv(kVariable);
  // A page is a memfd of exactly kSize bytes. Anything else is left alone, not closed: the
  // number may name an fd of ours (a listener), and a shorter file would fault when read.
  const auto check = event::check_passed_memfd(number, {"ferry-upgrade-state", kSize});
  if (!check.ok()) {
    spdlog::error("{}={} names no upgrade state page ({}): ignored", kVariable, number,
                  check.reason);
    return false;
  }
  const int fd = static_cast<int>(number);
  // Only the mapping is needed; the fd would otherwise leak into workers and later binaries.
  const event::UniqueFd owned(fd);
  if (map(owned.get())) return false;
  // The binaries before the magic word (989af2c and older) wrote the same state word first and
  // zeroes after it: their page is read as such.
  if (page_->magic == 0 && page_->version == 0) {
    spdlog::info("the upgrade state page is an older ferry's (no magic word): its state is read");
    return true;
  }
  if (page_->magic != kMagic || page_->version != kLayoutVersion) {
    spdlog::warn(
        "the upgrade state page passed in fd {} is not one this binary reads (magic {:#x}, "
        "layout {}; this binary's: {:#x}, {}): ignored",
        fd, page_->magic, page_->version, kMagic, kLayoutVersion);
    release();
    return false;
  }
  return true;
}

OldMasterState UpgradeState::peer() const noexcept {
  if (page_ == nullptr) return OldMasterState::unknown;
  return static_cast<OldMasterState>(page_->state.load(std::memory_order_acquire));
}

void UpgradeState::announce_leaving() noexcept {
  if (page_ != nullptr) {
    page_->new_master.store(static_cast<std::uint32_t>(NewMasterState::leaving),
                            std::memory_order_release);
  }
}

bool UpgradeState::new_master_leaving() const noexcept {
  return page_ != nullptr && page_->new_master.load(std::memory_order_acquire) >=
                                 static_cast<std::uint32_t>(NewMasterState::leaving);
}

void UpgradeState::acknowledge_hand_back() noexcept {
  if (page_ != nullptr) {
    page_->new_master.store(static_cast<std::uint32_t>(NewMasterState::taken_back),
                            std::memory_order_release);
  }
}

void UpgradeState::decline_hand_back() noexcept {
  if (page_ != nullptr) {
    page_->new_master.store(static_cast<std::uint32_t>(NewMasterState::declined),
                            std::memory_order_release);
  }
}

NewMasterState UpgradeState::hand_back_answer() const noexcept {
  if (page_ == nullptr) return NewMasterState::unknown;
  return static_cast<NewMasterState>(page_->new_master.load(std::memory_order_acquire));
}

void UpgradeState::release() noexcept {
  if (page_ != nullptr && ::munmap(page_, kSize) == -1) {
    spdlog::error("munmap() of the upgrade state page failed: {}", event::last_error().message());
  }
  page_ = nullptr;
  fd_.reset();
}

}  // namespace ferry::master
