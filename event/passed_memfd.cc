// check_passed_memfd(): fstat(2) for the kind and size, /proc/self/fd's link for the memfd name.
#include "event/passed_memfd.h"

#include <sys/stat.h>
#include <unistd.h>

#include <limits>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "event/syscall_util.h"

namespace ferry::event {
namespace {

const char* kind_of(mode_t mode) noexcept {
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISFIFO(mode)) return "a pipe";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "not a regular file";
}

PassedFdCheck fault(PassedFdFault what, std::string reason) { return {what, std::move(reason)}; }

}  // namespace

PassedFdCheck check_passed_memfd(long fd, const PassedMemfd& want) {
  if (fd <= STDERR_FILENO || fd > std::numeric_limits<int>::max()) {
    return fault(PassedFdFault::not_a_passed_number,
                 fmt::format("{} is not a number an exec passes a segment in", fd));
  }
  struct stat st {};
  if (::fstat(static_cast<int>(fd), &st) == -1) {
    const auto ec = last_error();
    return fault(
        ec == std::errc::bad_file_descriptor ? PassedFdFault::not_open : PassedFdFault::not_a_memfd,
        fmt::format("fd {}: fstat: {}", fd, ec.message()));
  }
  if (!S_ISREG(st.st_mode)) {
    return fault(PassedFdFault::not_a_memfd, fmt::format("fd {} is {}", fd, kind_of(st.st_mode)));
  }
  // A memfd's link reads "/memfd:NAME (deleted)"; a file on disk's, its path.
  char target[256]{};
  const std::string link = fmt::format("/proc/self/fd/{}", fd);
  const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
  if (n <= 0) {
    return fault(PassedFdFault::not_a_memfd,
                 fmt::format("fd {}: readlink({}): {}", fd, link,
                             n == -1 ? last_error().message() : "empty"));
  }
  const std::string_view path(target, static_cast<std::size_t>(n));
  constexpr std::string_view kMemfd = "/memfd:";
  if (!path.starts_with(kMemfd)) {
    return fault(PassedFdFault::not_a_memfd, fmt::format("fd {} is {}, not a memfd", fd, path));
  }
  if (!path.substr(kMemfd.size()).starts_with(want.name_prefix)) {
    return fault(PassedFdFault::other_name,
                 fmt::format("fd {} is {}, not a memfd named {}...", fd, path, want.name_prefix));
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  const bool exactly = want.rule == PassedMemfd::Size::exactly;
  if (exactly ? size != want.size : size < want.size) {
    return fault(PassedFdFault::wrong_size,
                 fmt::format("fd {} ({}) holds {} bytes, not {}{}", fd, path, size,
                             exactly ? "" : "at least ", want.size));
  }
  return {};
}

}  // namespace ferry::event
