// getpwnam_r with a buffer that grows until the entry fits.
#include "conf/user.h"

#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>
#include <vector>

namespace ferry::conf {

std::variant<UserIds, std::string> look_up_user(const std::string& name, std::size_t first_buffer) {
  const long hint = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  if (first_buffer == 0) first_buffer = hint > 0 ? static_cast<std::size_t>(hint) : 1024;
  std::vector<char> buffer(first_buffer);
  for (;;) {
    passwd entry{};
    passwd* found = nullptr;
    const int rc = ::getpwnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found);
    if (rc == ERANGE && buffer.size() < (std::size_t{1} << 20)) {
      buffer.resize(buffer.size() * 2);
      continue;
    }
    if (found != nullptr) return UserIds{entry.pw_uid, entry.pw_gid};
    // Not found is 0 (or, by some nss modules, ENOENT, ESRCH, EBADF). EPERM may say that too,
    // but also that a seccomp filter (systemd's SystemCallErrorNumber=EPERM) refused a call.
    if (rc == 0 || rc == ENOENT || rc == ESRCH || rc == EBADF) {
      return "no user named \"" + name + "\" on this system";
    }
    if (rc == EPERM) {
      return "looking up user \"" + name +
             "\" failed: Operation not permitted (no such user, or a system call of the lookup "
             "was refused)";
    }
    return "looking up user \"" + name + "\" failed: " + std::system_category().message(rc);
  }
}

}  // namespace ferry::conf
