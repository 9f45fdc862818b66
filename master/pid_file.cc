// Pid file I/O.
#include "master/pid_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "event/syscall_util.h"

namespace ferry::master {
std::error_code make_run_folder(const std::string& folder) {
  if (folder.empty()) return {};
  std::error_code ec;
  const auto parent = std::filesystem::path(folder).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  ec.clear();
  if (::mkdir(folder.c_str(), 0755) == 0) {
    // mkdir applied the umask; 0755 lets `-s` of root and the group find the pid file.
    if (::chmod(folder.c_str(), 0755) == -1) return event::last_error();
    return {};
  }
  if (errno != EEXIST) return event::last_error();
  struct stat st {};
  if (::stat(folder.c_str(), &st) == -1) return event::last_error();
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0) {
    spdlog::warn(
        "{} is writable by other users (mode {:o}): they can replace the pid file and "
        "the control socket",
        folder, st.st_mode & 07777);
  } else if (st.st_uid != 0 && st.st_uid != ::geteuid()) {
    spdlog::warn("{} belongs to uid {}: that user can replace the pid file and the control socket",
                 folder, st.st_uid);
  }
  return {};
}

namespace {

bool same_inode(const std::string& a, const std::string& b) {
  struct stat sa {};
  struct stat sb {};
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

std::string folder_of(const std::filesystem::path& p) {
  const auto folder = p.parent_path();
  return folder.empty() ? "." : folder.string();
}

}  // namespace

bool same_file(const std::string& a, const std::string& b) {
  if (a == b) return true;
  const std::filesystem::path pa(a);
  const std::filesystem::path pb(b);
  if (pa.filename() == pb.filename() && same_inode(folder_of(pa), folder_of(pb))) return true;
  return same_inode(a, b);
}

std::error_code write_pid_file(const std::string& path, pid_t pid) {
  // The control socket, opened first at start, made the folder; a reload that moves the pid
  // file writes it first. mkostemp tells why when the folder cannot be made.
  std::error_code ec;
  if (const auto folder = std::filesystem::path(path).parent_path();
      !folder.empty() && !std::filesystem::exists(folder, ec)) {
    (void)make_run_folder(folder);
  }
  ec.clear();
  // mkostemp opens with O_CREAT|O_EXCL: a link planted at the name is never followed, and the
  // random name cannot be guessed ahead.
  std::string tmp = path + ".XXXXXX";
  event::UniqueFd fd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (!fd) {
    ec = event::last_error();
    spdlog::critical("cannot write pid file {}: creating {}: {}", path, tmp, ec.message());
    return ec;
  }
  const std::string text = std::to_string(pid) + "\n";
  // mkostemp creates 0600; `-s` run by another user of the group may read the pid.
  if (::fchmod(fd.get(), 0644) == -1) {
    ec = event::last_error();
  } else if (const ssize_t n = ::write(fd.get(), text.data(), text.size());
             n != static_cast<ssize_t>(text.size())) {
    ec = n == -1 ? event::last_error() : std::make_error_code(std::errc::no_space_on_device);
  } else if (::rename(tmp.c_str(), path.c_str()) == -1) {
    ec = event::last_error();
  }
  if (ec) {
    spdlog::critical("cannot write pid file {}: {}", path, ec.message());
    ::unlink(tmp.c_str());
    return ec;
  }
  return {};
}

void remove_pid_file(const std::string& path, pid_t owner) {
  std::string why;
  if (const auto entry = read_pid_file(path, why); !entry || entry->pid != owner) {
    if (entry) {
      spdlog::info("pid file {} names pid {}, not this master's: left in place", path, entry->pid);
    } else if (::access(path.c_str(), F_OK) == 0 || errno != ENOENT) {
      spdlog::warn("pid file {} left in place: {}", path, why);
    }
    return;
  }
  if (::unlink(path.c_str()) == -1 && errno != ENOENT) {
    spdlog::error("cannot remove pid file {}: {}", path, std::strerror(errno));
  }
}

std::optional<PidFileEntry> read_pid_file(const std::string& path, std::string& why) {
  const event::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!fd) {
    why = "cannot open " + path + ": " +
          (errno == ELOOP ? std::string("it is a symbolic link") : std::strerror(errno));
    return std::nullopt;
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) == -1) {
    why = "cannot stat " + path + ": " + std::strerror(errno);
    return std::nullopt;
  }
  if (!S_ISREG(st.st_mode)) {
    why = path + " is not a regular file";
    return std::nullopt;
  }
  // A hard link would lend the file another name's folder and owner: a master writes one name.
  if (st.st_nlink != 1) {
    why = path + " has " + std::to_string(st.st_nlink) + " names (hard links); refusing it";
    return std::nullopt;
  }
  char buf[32];
  const ssize_t n = event::retry_eintr([&] { return ::read(fd.get(), buf, sizeof buf); });
  if (n < 0) {
    why = "cannot read " + path + ": " + std::strerror(errno);
    return std::nullopt;
  }
  std::string_view text(buf, static_cast<std::size_t>(n));
  if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  pid_t pid = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), pid);
  if (ec != std::errc{} || end != text.data() + text.size() || pid <= 0) {
    why = path + " does not hold a process id";
    return std::nullopt;
  }
  return PidFileEntry{pid, st.st_uid};
}

}  // namespace ferry::master
