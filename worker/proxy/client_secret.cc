// ClientSecret: the per-client hash's key drawn from getrandom(2) or read from the sealed memfd
// an old master passed (event::SealedSecret does the memfd's part).
#include "worker/proxy/client_secret.h"

#include <string.h>

#include <utility>

namespace ferry::worker {
namespace {

constexpr const char* kName = "ferry-client-secret";
constexpr std::string_view kWhat = "per-client secret";

}  // namespace

ClientSecret::~ClientSecret() { ::explicit_bzero(value_.data(), value_.size()); }

std::optional<ClientSecret> ClientSecret::create() noexcept {
  auto secret = ClientLimits::random_secret();
  if (!secret) return std::nullopt;
  ClientSecret s;
  s.value_ = *secret;
  ::explicit_bzero(secret->data(), secret->size());
  s.sealed_ = event::SealedSecret::create(kName, kWhat, s.value_);
  if (!s.sealed_) return std::nullopt;
  return s;
}

std::optional<ClientSecret> ClientSecret::adopt(event::UniqueFd passed) noexcept {
  ClientSecret s;
  s.sealed_ = event::SealedSecret::adopt(std::move(passed), kName, kWhat, s.value_);
  if (!s.sealed_) return std::nullopt;
  return s;
}

}  // namespace ferry::worker
