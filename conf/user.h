// Looking up the `user` setting's account, thread-safely (getpwnam_r): a reload reads the
// configuration on a thread while the master's loop runs.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <variant>

namespace ferry::conf {

struct UserIds {
  uid_t uid = 0;
  gid_t gid = 0;
};

// The account named `name`, or why there is none: "no user named ..." or the lookup's error.
// `first_buffer` (0: sysconf's hint) is where getpwnam_r starts; the buffer doubles on ERANGE.
std::variant<UserIds, std::string> look_up_user(const std::string& name,
                                                std::size_t first_buffer = 0);

}  // namespace ferry::conf
