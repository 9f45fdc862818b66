// close_inherited_fds() and name_passed_fds(): /proc/self/fd read with opendir/readdir.
#include "master/inherited_fds.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "event/syscall_util.h"
#include "master/listeners.h"
#include "master/upgrade_link.h"
#include "master/upgrade_state.h"

namespace ferry::master {
namespace {

// The open fds above stderr, without the one reading the folder.
std::vector<int> open_fds() {
  std::vector<int> out;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) {
    spdlog::error("opendir(/proc/self/fd) failed: {}", event::last_error().message());
    return out;
  }
  while (const dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
    const int fd = std::atoi(entry->d_name);
    if (fd > STDERR_FILENO && fd != ::dirfd(dir)) out.push_back(fd);
  }
  ::closedir(dir);
  return out;
}

// "3;4s;5" (the forms the variables take): every number in it.
void add_listed(std::set<int>& keep, const char* variable) {
  const char* value = std::getenv(variable);
  if (value == nullptr) return;
  const std::string list = value;
  std::size_t pos = 0;
  while (pos < list.size()) {
    std::size_t end = list.find(';', pos);
    if (end == std::string::npos) end = list.size();
    keep.insert(std::atoi(list.substr(pos, end - pos).c_str()));
    pos = end + 1;
  }
}

}  // namespace

void close_inherited_fds() {
  std::set<int> keep;
  add_listed(keep, kPassedFdsVariable);
  ::unsetenv(kPassedFdsVariable);
  // Also named on their own: an older binary's master passes them without kPassedFdsVariable.
  add_listed(keep, ListenerSet::kInheritVariable);
  add_listed(keep, UpgradeState::kVariable);
  add_listed(keep, UpgradeLink::kVariable);
  // systemd's, when meant for this process (sd_listen_fds() takes them later).
  // Checked per open fd: an absurd LISTEN_FDS costs nothing.
  const char* pid = std::getenv("LISTEN_PID");
  const char* fds = std::getenv("LISTEN_FDS");
  long systemd_fds = 0;
  if (pid != nullptr && fds != nullptr && std::atol(pid) == static_cast<long>(::getpid())) {
    systemd_fds = std::atol(fds);
  }
  for (const int fd : open_fds()) {
    if (keep.contains(fd) || (fd >= SD_LISTEN_FDS_START && fd - SD_LISTEN_FDS_START < systemd_fds))
      continue;
    if (::close(fd) == -1) {
      spdlog::warn("closing inherited fd {} failed: {}", fd, event::last_error().message());
    } else {
      spdlog::debug("closed inherited fd {}", fd);
    }
  }
}

void name_passed_fds() {
  // The upgrade link is named on its own only: a binary that does not know it then closes it
  // (its old master sees the end of file and asks for nothing) instead of keeping it for good.
  const char* link = std::getenv(UpgradeLink::kVariable);
  const int link_fd = link != nullptr ? std::atoi(link) : -1;
  std::string value;
  for (const int fd : open_fds()) {
    const int flags = ::fcntl(fd, F_GETFD);
    if (flags == -1 || (flags & FD_CLOEXEC) != 0 || fd == link_fd) continue;
    value += (value.empty() ? "" : ";") + std::to_string(fd);
  }
  ::setenv(kPassedFdsVariable, value.c_str(), 1);
}

}  // namespace ferry::master
