// Looking up the `user` setting's account, thread-safely (getpwnam_r): a reload reads the
// configuration on a thread while the master's loop runs.
#pragma once

#include <sys/types.h>

#include <string>
#include <variant>

namespace ferry::conf {

struct UserIds {
  uid_t uid = 0;
  gid_t gid = 0;
};

// The account named `name`, or why there is none: "no user named ..." or the lookup's error.
std::variant<UserIds, std::string> look_up_user(const std::string& name);

}  // namespace ferry::conf
