// Opening the control socket (bound out of reach, renamed into place), polling and closing it,
// and checking its peers.
#include "master/control_server.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <string_view>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "master/pid_file.h"

namespace ferry::master {

namespace {

bool fill_address(sockaddr_un& sun, const std::string& path) {
  sun.sun_family = AF_UNIX;
  if (path.size() >= sizeof sun.sun_path) return false;  // never a truncated name
  std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
  return true;
}

constexpr std::string_view kPrivatePrefix = ".ferry-ctl.";
// A private folder younger than this is not stale, whatever its pid: a live master in another pid
// namespace sharing the folder looks gone (ESRCH), and its folder lives for milliseconds.
constexpr time_t kStaleAfterSeconds = 10;

// A folder only this process's user can enter (mkdtemp makes it 0700), named after the pid that
// made it (for remove_stale_folders), held open so that the socket is bound, set to 0600 and
// renamed through it (no path is resolved again), and removed with what is left in it.
class PrivateFolder {
 public:
  explicit PrivateFolder(const std::string& beside) {
    std::string name = fmt::format("{}/{}{}.XXXXXX", beside, kPrivatePrefix, ::getpid());
    if (::mkdtemp(name.data()) == nullptr) {
      failed_ = fmt::format("mkdtemp() in {} failed: {}", beside, event::last_error().message());
      return;
    }
    path_ = std::move(name);
    dir_.reset(::open(path_.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir_) failed_ = fmt::format("open({}) failed: {}", path_, event::last_error().message());
  }
  PrivateFolder(const PrivateFolder&) = delete;
  PrivateFolder& operator=(const PrivateFolder&) = delete;
  ~PrivateFolder() {
    if (path_.empty()) return;
    if (dir_) (void)::unlinkat(dir_.get(), "s", 0);  // gone already once renamed into place
    if (::rmdir(path_.c_str()) == -1) {
      spdlog::warn("rmdir({}) failed: {}", path_, event::last_error().message());
    }
  }
  // Why the folder could not be made or opened; empty when it was.
  [[nodiscard]] const std::string& failed() const noexcept { return failed_; }
  [[nodiscard]] int fd() const noexcept { return dir_.get(); }
  // The socket's name for bind(): through the open folder, at most ~25 bytes whatever the
  // folder's length, so the limit on the real path stays sun_path's.
  [[nodiscard]] std::string socket_alias() const {
    return fmt::format("/proc/self/fd/{}/s", dir_.get());
  }

 private:
  std::string path_;
  std::string failed_;
  event::UniqueFd dir_;
};

// The pid in a private folder's name, or 0 for a name that is not one.
pid_t private_folder_pid(std::string_view name) {
  if (!name.starts_with(kPrivatePrefix)) return 0;
  name.remove_prefix(kPrivatePrefix.size());
  pid_t pid = 0;
  const auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), pid);
  return ec == std::errc{} && end != name.data() && *end == '.' ? pid : 0;
}

// Private folders of this user left in `folder` by a master that died between making one and
// renaming its socket out (SIGKILL, the OOM killer, systemd's watchdog): removed once
// kStaleAfterSeconds old, so that they do not pile up where the folder outlives the service
// (RuntimeDirectoryPreserve=).
void remove_stale_folders(const std::string& folder) {
  DIR* dir = ::opendir(folder.c_str());
  if (dir == nullptr) {
    spdlog::warn("opendir({}) failed: {}; stale {}* folders stay", folder,
                 event::last_error().message(), kPrivatePrefix);
    return;
  }
  while (const dirent* e = ::readdir(dir)) {
    const pid_t pid = private_folder_pid(e->d_name);
    if (pid <= 0 || pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
    struct stat st {};
    if (::fstatat(::dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == -1 ||
        !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid()) {
      continue;
    }
    // Modified when made and when its socket is bound and renamed out (a future time: young).
    if (::time(nullptr) - st.st_mtime < kStaleAfterSeconds) continue;
    const event::UniqueFd stale(
        ::openat(::dirfd(dir), e->d_name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (stale && ::unlinkat(stale.get(), "s", 0) == -1 && errno != ENOENT) {
      spdlog::warn("unlink({}/{}/s) failed: {}", folder, e->d_name, event::last_error().message());
    }
    if (::unlinkat(::dirfd(dir), e->d_name, AT_REMOVEDIR) == -1) {
      spdlog::warn("rmdir({}/{}) failed: {}", folder, e->d_name, event::last_error().message());
    } else {
      spdlog::info("removed {}/{}, left by pid {} (gone)", folder, e->d_name, pid);
    }
  }
  ::closedir(dir);
}

}  // namespace

std::optional<std::string> control_path_too_long(const std::string& path) {
  constexpr std::size_t kMax = sizeof(sockaddr_un::sun_path) - 1;
  if (path.size() <= kMax) return std::nullopt;
  return fmt::format("the control socket {} is {} bytes long; at most {} fit a unix socket address",
                     path, path.size(), kMax);
}

event::UniqueFd open_control_socket(const std::string& path, SocketFileId* file) {
  if (const auto why = control_path_too_long(path)) {
    spdlog::critical("{}", *why);
    return {};
  }
  sockaddr_un sun{};
  // The pid file's folder (/run/ferry unless systemd made it): the socket comes first.
  const std::string folder = std::filesystem::path(path).parent_path();
  if (const auto ec = make_run_folder(folder)) {
    spdlog::critical("cannot create the folder of the control socket {}: {}", path, ec.message());
    return {};
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode) && !S_ISLNK(st.st_mode)) {
    spdlog::critical("cannot open the control socket {}: something else than a socket is there",
                     path);
    return {};
  }
  remove_stale_folders(folder.empty() ? "." : folder);
  // bind() makes the socket at the umask's mode: it is made where nobody else can reach it, set
  // to 0600 and listening, and only then renamed into place (replacing a stale socket, or a link
  // without following it).
  const PrivateFolder hidden(folder.empty() ? "." : folder);
  if (!hidden.failed().empty()) {
    spdlog::critical("cannot open the control socket {}: {}", path, hidden.failed());
    return {};
  }
  const std::string alias = hidden.socket_alias();
  if (!fill_address(sun, alias)) {
    spdlog::critical("cannot open the control socket {}: {} is too long", path, alias);
    return {};
  }
  const auto failed = [&](std::string_view call) {
    spdlog::critical("cannot open the control socket {}: {} failed: {}", path, call,
                     event::last_error().message());
    return event::UniqueFd{};
  };
  event::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return failed("socket()");
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun) == -1) {
    return failed(fmt::format("bind({})", alias));
  }
  if (::fchmodat(hidden.fd(), "s", 0600, 0) == -1) return failed("chmod() of the bound socket");
  if (::listen(fd.get(), 64) == -1) return failed("listen()");
  // The inode stays the same through the rename.
  struct stat bound {};
  if (file != nullptr) {
    if (::fstatat(hidden.fd(), "s", &bound, AT_SYMLINK_NOFOLLOW) == -1) return failed("stat()");
    *file = {bound.st_dev, bound.st_ino};
  }
  if (::renameat(hidden.fd(), "s", AT_FDCWD, path.c_str()) == -1) {
    return failed("rename() into place");
  }
  return fd;
}

bool ControlServer::open(const std::string& path) {
  SocketFileId file;
  event::UniqueFd fd = open_control_socket(path, &file);
  if (!fd) return false;
  stop_polling();
  event::UniqueFd old = std::exchange(listener_.fd, std::move(fd));
  if (const auto ec =
          loop_.add_event(listener_.read, event::EventKind::read, event::EventLoop::kLevel)) {
    spdlog::critical("cannot poll the control socket {}: {}", path, ec.message());
    // No socket left behind that nobody answers on.
    if (::unlink(path.c_str()) == -1) {
      spdlog::warn("unlink({}) failed: {}", path, event::last_error().message());
    }
    listener_.fd = std::move(old);
    if (!listener_.fd) return false;
    file_ = {};  // whoever owns the path now, it is not the old socket's file
    if (const auto again =
            loop_.add_event(listener_.read, event::EventKind::read, event::EventLoop::kLevel)) {
      spdlog::error("cannot poll the previous control socket again: {}; ferry -s gets no answer",
                    again.message());
    }
    return false;
  }
  file_ = file;
  return true;
}

void ControlServer::remove_file(const std::string& path) const noexcept {
  struct stat st {};
  if (!file_.known() || ::lstat(path.c_str(), &st) == -1 || st.st_dev != file_.dev ||
      st.st_ino != file_.ino) {
    return;
  }
  if (::unlink(path.c_str()) == -1) {
    spdlog::warn("unlink({}) failed: {}", path, event::last_error().message());
  }
}

void ControlServer::stop_polling() noexcept {
  if (listener_.read.active) {
    (void)loop_.del_event(listener_.read, event::EventKind::read, false);
  }
  loop_.del_timer(listener_.read);  // an accept pause
}

void ControlServer::close() noexcept {
  stop_polling();
  listener_.fd.reset();
}

void remove_dead_socket(const std::string& path) noexcept {
  sockaddr_un sun{};
  if (!fill_address(sun, path)) return;
  const event::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return;
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun) == 0 ||
      errno != ECONNREFUSED) {
    return;  // someone listens (or there is nothing, or it cannot be told)
  }
  if (::unlink(path.c_str()) == -1 && errno != ENOENT) {
    spdlog::warn("unlink({}) failed: {}", path, event::last_error().message());
  }
}

std::optional<std::string> control_peer_refused(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1) {
    return fmt::format("getsockopt(SO_PEERCRED) failed: {}", event::last_error().message());
  }
  if (cred.uid == 0 || cred.uid == ::geteuid()) return std::nullopt;
  return fmt::format("uid {} (pid {}) may not control this master (root and uid {} may)", cred.uid,
                     cred.pid, ::geteuid());
}

}  // namespace ferry::master
