// check_passed_memfd(): whether an fd number passed across a binary upgrade's exec is really the
// memfd an old master made, and if not, why not.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace ferry::event {

// What a passed fd must be: a memfd whose name begins with `name_prefix`, holding `size` bytes
// (exactly, or at least: a prefix alone is checked with at_least and 0).
struct PassedMemfd {
  enum class Size { exactly, at_least };
  std::string_view name_prefix;
  std::size_t size = 0;
  Size rule = Size::exactly;
};

enum class PassedFdFault {
  none,
  not_a_passed_number,  // stdin, stdout, stderr, or no int at all
  not_open,
  not_a_memfd,  // a socket, a pipe, a file on disk...
  other_name,
  wrong_size,
};

struct PassedFdCheck {
  PassedFdFault fault = PassedFdFault::none;
  std::string reason;  // what the fd is instead, for the log ("" when it is what was wanted)
  [[nodiscard]] bool ok() const noexcept { return fault == PassedFdFault::none; }
};

// Never closes `fd`, nor changes anything about it: a number that is not what was passed may
// name an fd of the caller's own (a listener). Closing one that passes is up to the caller.
[[nodiscard]] PassedFdCheck check_passed_memfd(long fd, const PassedMemfd& want);

}  // namespace ferry::event
