// ClientSecret: the key of the per-client table's hash, kept by each process in its own memory
// and carried across a binary upgrade's exec in a memfd sealed against every write.
#pragma once

#include <optional>

#include "event/sealed_secret.h"
#include "event/syscall_util.h"
#include "worker/proxy/client_limits.h"

namespace ferry::worker {

// Workers get their copy by fork and never see the memfd: one that is compromised can change
// only its own copy, not its peers' nor the next generations'.
class ClientSecret {
 public:
  // A new secret from getrandom(2), in a new sealed memfd (CLOEXEC). nullopt (logged) when the
  // kernel gives no random bytes or no memfd.
  static std::optional<ClientSecret> create() noexcept;
  // The secret an old master passed in memfd `fd` (kept, or closed on failure; the caller hands
  // over only an fd it knows to be the old master's memfd). It must be sealed against writes
  // and resizing and hold exactly one secret: nullopt (logged) otherwise.
  static std::optional<ClientSecret> adopt(event::UniqueFd fd) noexcept;

  ClientSecret(ClientSecret&&) noexcept = default;
  ClientSecret& operator=(ClientSecret&&) noexcept = default;
  ~ClientSecret();  // wipes the secret

  [[nodiscard]] const ClientLimits::Secret& value() const noexcept { return value_; }
  // The memfd, for the next exec to pass on (-1 once closed).
  [[nodiscard]] int fd() const noexcept { return sealed_ ? sealed_->fd() : -1; }
  // A forked worker: it has its copy, it needs no fd.
  void close_fd() noexcept {
    if (sealed_) sealed_->close_fd();
  }

 private:
  ClientSecret() noexcept = default;
  ClientLimits::Secret value_{};
  std::optional<event::SealedSecret> sealed_;
};

}  // namespace ferry::worker
