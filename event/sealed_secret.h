// SealedSecret: a few secret bytes in a memfd sealed against every write, how a master carries a
// secret across a binary upgrade's exec (its memory does not survive the exec; an fd does).
#pragma once

#include <optional>
#include <span>
#include <string_view>
#include <utility>

#include "event/syscall_util.h"

namespace ferry::event {

// Only the fd: each owner keeps its bytes in its own memory and wipes them. Sealed, the memfd
// cannot be changed by anyone holding it, so what one generation drew is what the next reads.
class SealedSecret {
 public:
  // A new memfd named `name` (CLOEXEC) holding `bytes`, sealed against writes and resizing.
  // nullopt (logged, `what` naming the secret) when the kernel gives no memfd or refuses a step.
  static std::optional<SealedSecret> create(const char* name, std::string_view what,
                                            std::span<const unsigned char> bytes) noexcept;
  // Reads into `out` the secret an old master passed in `fd`, which must be a memfd whose name
  // begins with `name`, sealed against writes and resizing, holding exactly out.size() bytes.
  // Keeps the fd (CLOEXEC again, for the next exec to pass on) or, on failure, closes it, wipes
  // `out` and returns nullopt (logged). The caller hands over only an fd it knows to be passed:
  // check_passed_memfd() first when the number comes from the environment.
  static std::optional<SealedSecret> adopt(UniqueFd fd, const char* name, std::string_view what,
                                           std::span<unsigned char> out) noexcept;

  // The memfd (-1 once closed).
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  // A forked worker has its copy of the bytes; it needs no fd.
  void close_fd() noexcept { fd_.reset(); }
  // In the forked child about to exec: clears FD_CLOEXEC so that the new binary gets the fd.
  // False (logged) when it cannot: then the fd is not to be named to the new binary.
  [[nodiscard]] bool pass_to_exec(std::string_view what) const noexcept;

 private:
  explicit SealedSecret(UniqueFd fd) noexcept : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace ferry::event
