// TicketSecret: the master's secret the TLS session ticket keys derive from, kept in a sealed
// memfd so that a binary upgrade's new master derives the same keys and old tickets resume.
#pragma once

#include <array>
#include <memory>
#include <optional>

#include "event/sealed_secret.h"
#include "worker/tls/ticket_keys.h"

namespace ferry::master {

// Workers get the keys by fork and never keep the memfd (enter_worker()). A rollback needs
// nothing: the old master still holds its secret and its memfd.
class TicketSecret {
 public:
  // "<fd>": the memfd, set only in the child about to exec the new binary.
  static constexpr const char* kVariable = "FERRY_TICKET_SECRET";

  TicketSecret() noexcept = default;
  ~TicketSecret();  // wipes a passed secret not yet used
  TicketSecret(const TicketSecret&) = delete;
  TicketSecret& operator=(const TicketSecret&) = delete;

  // At start, once, whether or not TLS is configured: reads and unsets kVariable (so that no
  // worker nor a later binary sees it) and, when `upgraded`, takes the secret the old master
  // passed, kept until keys() first runs. A memfd passed to a master that is not an upgrade's
  // is closed.
  void take_passed(bool upgraded);
  // The keys, made when TLS is first configured: from the passed secret, else from a new one,
  // which goes to a new sealed memfd for the next upgrade. Null (logged by the caller) when
  // OpenSSL gives no random bytes.
  std::shared_ptr<worker::tls::TicketKeys> make_keys();

  // In the forked child about to exec the new binary: clears FD_CLOEXEC on the memfd and names
  // it in kVariable (nothing when there is none: the new master draws its own).
  void pass_to_exec() const;
  // In a forked worker: the keys are in its memory already.
  void enter_worker() noexcept;

 private:
  void wipe_passed() noexcept;

  std::array<unsigned char, worker::tls::TicketKeys::kSecretSize> passed_{};
  bool have_passed_ = false;
  std::optional<event::SealedSecret> sealed_;
};

}  // namespace ferry::master
