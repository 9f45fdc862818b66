// Opening the control socket and checking its peers.
#include "master/control_server.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "master/pid_file.h"

namespace ferry::master {

event::UniqueFd open_control_socket(const std::string& path) {
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  if (path.size() >= sizeof sun.sun_path) {
    spdlog::critical("control socket path {} is too long", path);
    return {};
  }
  // The pid file's folder (/run/ferry unless systemd made it): the socket comes first.
  if (const auto ec = make_run_folder(std::filesystem::path(path).parent_path())) {
    spdlog::critical("cannot create the folder of the control socket {}: {}", path, ec.message());
    return {};
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode) && !S_ISLNK(st.st_mode)) {
      spdlog::critical("cannot open the control socket {}: something else than a socket is there",
                       path);
      return {};
    }
    if (::unlink(path.c_str()) == -1 && errno != ENOENT) {
      spdlog::critical("cannot remove the stale control socket {}: {}", path,
                       event::last_error().message());
      return {};
    }
  }
  std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
  event::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun) == -1) {
    spdlog::critical("cannot open the control socket {}: {}", path, event::last_error().message());
    return {};
  }
  // The mode the umask left is not trusted; nobody can connect before listen(), and a link put
  // in place of the socket meanwhile is not followed (then it fails).
  if (::fchmodat(AT_FDCWD, path.c_str(), 0600, AT_SYMLINK_NOFOLLOW) == -1 ||
      ::listen(fd.get(), 64) == -1) {
    spdlog::critical("cannot open the control socket {}: {}", path, event::last_error().message());
    return {};
  }
  return fd;
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
