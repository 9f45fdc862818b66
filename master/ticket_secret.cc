// TicketSecret: drawing the ticket secret into a sealed memfd, passing it across a binary
// upgrade's exec, and the new master's reading it.
#include "master/ticket_secret.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>

#include <spdlog/spdlog.h>

#include "conf/tls_check.h"
#include "event/passed_memfd.h"

namespace ferry::master {
namespace {

constexpr const char* kMemfdName = "ferry-ticket-secret";
constexpr std::string_view kWhat = "TLS session ticket secret";

// The fd number in `value`, or -1 when it is none.
long number_in(const char* value) noexcept {
  char* rest = nullptr;
  errno = 0;
  const long n = std::strtol(value, &rest, 10);
  return *value == '\0' || *rest != '\0' || errno != 0 ? -1 : n;
}

}  // namespace

TicketSecret::~TicketSecret() { wipe_passed(); }

void TicketSecret::wipe_passed() noexcept {
  OPENSSL_cleanse(passed_.data(), passed_.size());
  have_passed_ = false;
}

void TicketSecret::take_passed(bool upgraded) {
  const char* value = std::getenv(kVariable);
  const std::string passed = value != nullptr ? value : "";
  ::unsetenv(kVariable);
  if (value == nullptr) {
    if (upgraded) {
      spdlog::info(
          "the old master passes no TLS session ticket secret (an older ferry, or no TLS): "
          "tickets it issued are not resumed");
    }
    return;
  }
  // A number that is not our memfd may name an fd of ours (a listener): left alone.
  const long n = number_in(passed.c_str());
  if (const auto check = event::check_passed_memfd(n, {kMemfdName, passed_.size()}); !check.ok()) {
    spdlog::error("{}={}: {}: a new ticket secret is drawn", kVariable, passed, check.reason);
    return;
  }
  event::UniqueFd fd(static_cast<int>(n));
  if (!upgraded) {
    spdlog::warn("{} is set but this master is no binary upgrade's: fd {} closed", kVariable, n);
    return;
  }
  sealed_ = event::SealedSecret::adopt(std::move(fd), kMemfdName, kWhat, passed_);
  if (!sealed_) {
    spdlog::error("a new ticket secret is drawn: tickets the old master issued are not resumed");
    return;
  }
  have_passed_ = true;
  spdlog::info("TLS session ticket secret taken over from the old master");
}

std::shared_ptr<worker::tls::TicketKeys> TicketSecret::make_keys() {
  if (have_passed_) {
    auto keys = worker::tls::TicketKeys::from_secret(passed_);
    wipe_passed();
    return keys;
  }
  std::array<unsigned char, worker::tls::TicketKeys::kSecretSize> secret{};
  if (RAND_bytes(secret.data(), static_cast<int>(secret.size())) != 1) {
    spdlog::error("RAND_bytes() for the {} failed: {}", kWhat, conf::openssl_error());
    return nullptr;
  }
  // Without a memfd the keys still serve this master; only a binary upgrade loses them.
  sealed_ = event::SealedSecret::create(kMemfdName, kWhat, secret);
  if (!sealed_) {
    spdlog::error("tickets will not resume across a binary upgrade: the {} has no memfd", kWhat);
  }
  auto keys = worker::tls::TicketKeys::from_secret(secret);
  OPENSSL_cleanse(secret.data(), secret.size());
  return keys;
}

void TicketSecret::pass_to_exec() const {
  if (sealed_ && sealed_->pass_to_exec(kWhat)) {
    ::setenv(kVariable, std::to_string(sealed_->fd()).c_str(), 1);
  } else {
    ::unsetenv(kVariable);
  }
}

void TicketSecret::enter_worker() noexcept {
  sealed_.reset();
  wipe_passed();
}

}  // namespace ferry::master
