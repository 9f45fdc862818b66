// UpgradeSegments: passing the per-client table and the statistics across a binary upgrade's
// exec, and the new master's taking them over.
#include "master/upgrade_segments.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "event/passed_memfd.h"
#include "event/syscall_util.h"

namespace ferry::master {
namespace {

// The numbers of "A;B;C..." (an empty or malformed one as -1), at most six: a sixth makes the
// value one no ferry passes.
std::vector<long> numbers_in(const std::string& list) {
  std::vector<long> out;
  std::size_t pos = 0;
  while (pos <= list.size() && out.size() < 6) {
    std::size_t end = list.find(';', pos);
    if (end == std::string::npos) end = list.size();
    const std::string item = list.substr(pos, end - pos);
    char* rest = nullptr;
    errno = 0;
    const long n = std::strtol(item.c_str(), &rest, 10);
    out.push_back(item.empty() || *rest != '\0' || errno != 0 ? -1 : n);
    pos = end + 1;
  }
  return out;
}

constexpr long kLayout = 2;

// `fd` when it is a segment an old master passes (a memfd whose name begins with `prefix`),
// else -1 (logged): a number that is not one might name an fd of ours, a listener, which must be
// neither taken over nor closed.
int passed_memfd(long fd, std::string_view prefix) noexcept {
  const auto check = event::check_passed_memfd(fd, {prefix, 0, event::PassedMemfd::Size::at_least});
  if (!check.ok()) {
    spdlog::error("{}: {}: not a segment an old master passes, left alone",
                  UpgradeSegments::kVariable, check.reason);
    return -1;
  }
  return static_cast<int>(fd);
}

// Closes a segment passed for nothing (an older layout, a value not taken).
void close_if_passed(long fd) noexcept {
  if (const int mine = passed_memfd(fd, "ferry-"); mine >= 0) ::close(mine);
}

}  // namespace

worker::ClientLimits* UpgradeSegments::open_client_limits(bool upgraded) {
  const char* value = std::getenv(kVariable);
  const std::string passed = value != nullptr ? value : "";
  ::unsetenv(kVariable);
  // Test only; read once here, like every hook, so that neither a worker nor the next binary
  // sees it.
  pass_garbage_ = std::getenv(kGarbageVariable) != nullptr;
  ::unsetenv(kGarbageVariable);
  if (upgraded && !passed.empty()) {
    const std::vector<long> n = numbers_in(passed);
    if (n.size() == 4) {
      // An older ferry: its statistics are taken, its per-client table (another layout) not.
      old_registry_ = passed_memfd(n[0], "ferry-stats-");
      old_counters_ = passed_memfd(n[1], "ferry-stats-");
      close_if_passed(n[2]);
      spdlog::warn("the old master is an older ferry: per-client counts start over");
    } else if (n.size() != 5 || n[0] != kLayout) {
      for (long fd : n) close_if_passed(fd);
      spdlog::error(
          "{}={} is not what an old master passes: statistics and per-client counts "
          "start over",
          kVariable, passed);
    } else {
      old_registry_ = passed_memfd(n[1], "ferry-stats-");
      old_counters_ = passed_memfd(n[2], "ferry-stats-");
      // Ours from here on, to take over or close.
      event::UniqueFd limits(n[3] >= 0 ? passed_memfd(n[3], "ferry-client-limits") : -1);
      event::UniqueFd secret(n[4] >= 0 ? passed_memfd(n[4], "ferry-client-secret") : -1);
      if (secret) secret_ = worker::ClientSecret::adopt(std::move(secret));
      if (secret_ && limits &&
          !limits_shm_.adopt(std::move(limits), worker::ClientLimits::bytes_needed(),
                             "ferry-client-limits")) {
        spdlog::info("per-client counts taken over from the old master");
        return worker::ClientLimits::adopt(limits_shm_.data());
      }
      secret_.reset();
      spdlog::error("the old master's per-client table could not be taken over: counts start over");
    }
  } else if (upgraded) {
    spdlog::warn("the old master passes no statistics nor per-client counts: they start over");
  }
  if (limits_shm_.create_passable(worker::ClientLimits::bytes_needed(), "ferry-client-limits")) {
    return nullptr;
  }
  secret_ = worker::ClientSecret::create();
  if (!secret_) return nullptr;
  return worker::ClientLimits::create(limits_shm_.data());
}

bool UpgradeSegments::inherit_first(worker::StatsTable& stats) {
  if (old_registry_ <= STDERR_FILENO || old_counters_ <= STDERR_FILENO) {
    // Half a pair is of no use: the other fd passed would stay open (and reach every worker).
    for (int* fd : {&old_registry_, &old_counters_}) {
      if (*fd > STDERR_FILENO) ::close(*fd);
      *fd = -1;
    }
    return false;
  }
  old_master_ = ::getppid();
  old_stats_ = worker::StatsTable::open_passed(event::UniqueFd(std::exchange(old_registry_, -1)),
                                               event::UniqueFd(std::exchange(old_counters_, -1)));
  if (old_stats_ == nullptr) return false;
  return inherit_more(stats, false);
}

bool UpgradeSegments::inherit_more(worker::StatsTable& stats, bool old_master_gone) {
  if (old_stats_ == nullptr) return false;
  std::optional<std::size_t> left;
  try {
    left = stats.inherit(*old_stats_, old_master_gone);
  } catch (const std::exception& e) {  // bad_alloc: try again later
    spdlog::error("taking in the old master's statistics failed: {}", e.what());
  }
  if (left && *left != 0) {
    spdlog::warn(
        "{} statistics entr(y/ies) of the old master are not taken: they cannot be true, or the "
        "registry is full",
        *left);
  }
  if (!old_master_gone) return true;
  if (!left) return true;  // give it another go
  spdlog::info("the old master (pid {}) has exited: its statistics are taken for good",
               old_master_);
  old_stats_.reset();
  return false;
}

void UpgradeSegments::pass_to_exec(const worker::StatsTable& stats) const {
  const std::string stats_fds =
      pass_garbage_ ? worker::StatsTable::garbage_for_exec() : stats.pass_to_exec();
  // Both or neither: a table is of no use without the secret that places clients in it, and
  // one not named in kVariable would stay open in the new master and all its workers.
  int limits = limits_shm_.fd();
  int secret = secret_ ? secret_->fd() : -1;
  if (limits >= 0 && secret >= 0 &&
      (::fcntl(limits, F_SETFD, 0) == -1 || ::fcntl(secret, F_SETFD, 0) == -1)) {
    spdlog::error("fcntl(F_SETFD, 0) for the per-client table (fds {} and {}) failed: {}", limits,
                  secret, event::last_error().message());
    (void)::fcntl(limits, F_SETFD, FD_CLOEXEC);  // the child execs now: nothing else to do
  }
  if (limits < 0 || secret < 0 || (::fcntl(limits, F_GETFD) & FD_CLOEXEC) != 0 ||
      (::fcntl(secret, F_GETFD) & FD_CLOEXEC) != 0) {
    limits = secret = -1;
  }
  const std::string value = std::to_string(kLayout) + ";" +
                            (stats_fds.empty() ? std::string(";") : stats_fds) + ";" +
                            std::to_string(limits) + ";" + std::to_string(secret);
  ::setenv(kVariable, value.c_str(), 1);
}

void UpgradeSegments::enter_worker() noexcept {
  limits_shm_.close_fd();
  if (secret_) secret_->close_fd();
  old_stats_.reset();
}

}  // namespace ferry::master
