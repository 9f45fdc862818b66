// Opening the control socket (bound out of reach, renamed into place), polling and closing it,
// and checking its peers.
#include "master/control_server.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "master/pid_file.h"

namespace ferry::master {

namespace {

bool fill_address(sockaddr_un& sun, const std::string& path) {
  sun.sun_family = AF_UNIX;
  if (path.size() >= sizeof sun.sun_path) return false;
  std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
  return true;
}

// A folder only this process's user can enter (mkdtemp makes it 0700), removed with what is left
// in it when it goes.
class PrivateFolder {
 public:
  explicit PrivateFolder(const std::string& beside) {
    std::string name = beside + "/.ferry-ctl.XXXXXX";
    if (::mkdtemp(name.data()) != nullptr) path_ = std::move(name);
  }
  PrivateFolder(const PrivateFolder&) = delete;
  PrivateFolder& operator=(const PrivateFolder&) = delete;
  ~PrivateFolder() {
    if (path_.empty()) return;
    (void)::unlink(socket().c_str());  // gone already once renamed into place
    if (::rmdir(path_.c_str()) == -1) {
      spdlog::warn("rmdir({}) failed: {}", path_, event::last_error().message());
    }
  }
  [[nodiscard]] bool made() const noexcept { return !path_.empty(); }
  [[nodiscard]] std::string socket() const { return path_ + "/s"; }

 private:
  std::string path_;
};

}  // namespace

event::UniqueFd open_control_socket(const std::string& path) {
  sockaddr_un sun{};
  if (!fill_address(sun, path)) {
    spdlog::critical("control socket path {} is too long", path);
    return {};
  }
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
  // bind() makes the socket at the umask's mode: it is made where nobody else can reach it, set
  // to 0600 and listening, and only then renamed into place (replacing a stale socket, or a link
  // without following it).
  const PrivateFolder hidden(folder.empty() ? "." : folder);
  if (!hidden.made()) {
    spdlog::critical("cannot open the control socket {}: mkdtemp() in {} failed: {}", path, folder,
                     event::last_error().message());
    return {};
  }
  const std::string bound = hidden.socket();
  if (!fill_address(sun, bound)) {
    spdlog::critical("control socket path {} is too long (its temporary name {} is)", path, bound);
    return {};
  }
  event::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun) == -1 ||
      ::chmod(bound.c_str(), 0600) == -1 || ::listen(fd.get(), 64) == -1 ||
      ::rename(bound.c_str(), path.c_str()) == -1) {
    spdlog::critical("cannot open the control socket {}: {}", path, event::last_error().message());
    return {};
  }
  return fd;
}

bool ControlServer::open(const std::string& path) {
  event::UniqueFd fd = open_control_socket(path);
  if (!fd) return false;
  stop_polling();
  event::UniqueFd old = std::exchange(listener_.fd, std::move(fd));
  if (loop_.add_event(listener_.read, event::EventKind::read, event::EventLoop::kLevel)) {
    ::unlink(path.c_str());  // no socket left behind that nobody answers on
    listener_.fd = std::move(old);
    if (listener_.fd) {
      (void)loop_.add_event(listener_.read, event::EventKind::read, event::EventLoop::kLevel);
    }
    return false;
  }
  return true;
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
