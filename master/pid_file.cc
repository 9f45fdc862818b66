// Pid file I/O.
#include "master/pid_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <spdlog/spdlog.h>

namespace ferry::master {

std::error_code write_pid_file(const std::string& path, pid_t pid) {
  std::error_code ec;
  const auto folder = std::filesystem::path(path).parent_path();
  if (!folder.empty()) std::filesystem::create_directories(folder, ec);
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd == -1) {
    ec = {errno, std::system_category()};
    spdlog::critical("cannot write pid file {}: {}", tmp, ec.message());
    return ec;
  }
  const std::string text = std::to_string(pid) + "\n";
  const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  const int err = errno;
  ::close(fd);
  if (!written || ::rename(tmp.c_str(), path.c_str()) == -1) {
    ec = {written ? errno : err, std::system_category()};
    spdlog::critical("cannot write pid file {}: {}", path, ec.message());
    ::unlink(tmp.c_str());
    return ec;
  }
  return {};
}

void remove_pid_file(const std::string& path) {
  if (::unlink(path.c_str()) == -1 && errno != ENOENT) {
    spdlog::error("cannot remove pid file {}: {}", path, std::strerror(errno));
  }
}

std::optional<pid_t> read_pid_file(const std::string& path, std::string& why) {
  std::ifstream in(path);
  if (!in) {
    why = "cannot open " + path + ": " + std::strerror(errno);
    return std::nullopt;
  }
  std::string text;
  std::getline(in, text);
  pid_t pid = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), pid);
  if (ec != std::errc{} || end != text.data() + text.size() || pid <= 0) {
    why = path + " does not hold a process id";
    return std::nullopt;
  }
  return pid;
}

}  // namespace ferry::master
