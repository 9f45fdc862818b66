// UpgradeSegments: passing the per-client table and the statistics across a binary upgrade's
// exec, and the new master's taking them over.
#include "master/upgrade_segments.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "event/syscall_util.h"

namespace ferry::master {
namespace {

// The numbers of "A;B;C;D" (an empty or malformed one as -1): four of them, or none.
std::vector<long> numbers_in(const std::string& list) {
  std::vector<long> out;
  std::size_t pos = 0;
  while (pos <= list.size() && out.size() < 5) {
    std::size_t end = list.find(';', pos);
    if (end == std::string::npos) end = list.size();
    const std::string item = list.substr(pos, end - pos);
    char* rest = nullptr;
    errno = 0;
    const long n = std::strtol(item.c_str(), &rest, 10);
    out.push_back(item.empty() || *rest != '\0' || errno != 0 ? -1 : n);
    pos = end + 1;
  }
  if (out.size() != 4) out.clear();
  return out;
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
    if (n.empty()) {
      spdlog::error(
          "{}={} is not what an old master passes: statistics and per-client counts "
          "start over",
          kVariable, passed);
    } else {
      old_registry_ = static_cast<int>(n[0]);
      old_counters_ = static_cast<int>(n[1]);
      if (n[2] > STDERR_FILENO &&
          !limits_shm_.adopt(static_cast<int>(n[2]), worker::ClientLimits::bytes_needed())) {
        // The other half of the shares from the old master's workers' (both number from 0).
        share_base_ = n[3] == 0 ? worker::ClientLimits::kShareHalf : 0;
        spdlog::info("per-client counts taken over from the old master");
        return worker::ClientLimits::adopt(limits_shm_.data());
      }
      spdlog::error("the old master's per-client table could not be taken over: counts start over");
    }
  } else if (upgraded) {
    spdlog::warn("the old master passes no statistics nor per-client counts: they start over");
  }
  if (limits_shm_.create_passable(worker::ClientLimits::bytes_needed(), "ferry-client-limits")) {
    return nullptr;
  }
  const auto secret = worker::ClientLimits::random_secret();
  if (!secret) return nullptr;
  return worker::ClientLimits::create(limits_shm_.data(), *secret);
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
  old_stats_ = worker::StatsTable::open_passed(std::exchange(old_registry_, -1),
                                               std::exchange(old_counters_, -1));
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
  int limits = limits_shm_.fd();
  if (limits >= 0 && ::fcntl(limits, F_SETFD, 0) == -1) {
    spdlog::error("fcntl({}, F_SETFD, 0) for the per-client table failed: {}", limits,
                  event::last_error().message());
    limits = -1;
  }
  const std::string value = (stats_fds.empty() ? std::string(";") : stats_fds) + ";" +
                            std::to_string(limits) + ";" + std::to_string(share_base_);
  ::setenv(kVariable, value.c_str(), 1);
}

void UpgradeSegments::enter_worker() noexcept {
  limits_shm_.close_fd();
  old_stats_.reset();
}

}  // namespace ferry::master
