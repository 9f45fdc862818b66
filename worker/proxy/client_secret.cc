// ClientSecret: making the sealed memfd that carries the per-client hash's key, and reading one
// an old master passed.
#include "worker/proxy/client_secret.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>
#include <utility>

#include <spdlog/spdlog.h>

#include "event/passed_memfd.h"

namespace ferry::worker {
namespace {

constexpr int kSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;

}  // namespace

std::optional<ClientSecret> ClientSecret::create() noexcept {
  auto secret = ClientLimits::random_secret();
  if (!secret) return std::nullopt;
  ClientSecret s;
  s.value_ = *secret;
  s.fd_.reset(::memfd_create("ferry-client-secret", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!s.fd_) {
    spdlog::critical("memfd_create() for the per-client secret failed: {}",
                     event::last_error().message());
    return std::nullopt;
  }
  const auto written = event::all_bytes(s.value_.size(), [&](std::size_t done, std::size_t left) {
    return ::pwrite(s.fd_.get(), s.value_.data() + done, left, static_cast<off_t>(done));
  });
  if (!written.complete) {
    spdlog::critical("writing the per-client secret to its memfd failed: {}",
                     written.error ? written.error.message() : std::string("no bytes written"));
    return std::nullopt;
  }
  // No writable mapping of it exists, so F_SEAL_WRITE is taken; F_SEAL_SEAL keeps it.
  if (::fcntl(s.fd_.get(), F_ADD_SEALS, kSeals | F_SEAL_SEAL) == -1) {
    spdlog::critical("sealing the per-client secret's memfd (F_ADD_SEALS) failed: {}",
                     event::last_error().message());
    return std::nullopt;
  }
  return s;
}

std::optional<ClientSecret> ClientSecret::adopt(event::UniqueFd passed) noexcept {
  ClientSecret s;
  s.fd_ = std::move(passed);
  const int fd = s.fd_.get();
  if (const auto check = event::check_passed_memfd(fd, {"ferry-client-secret", s.value_.size()});
      !check.ok()) {
    spdlog::error("the passed per-client secret is not taken: {}", check.reason);
    return std::nullopt;
  }
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals == -1) {
    spdlog::error("fcntl({}, F_GET_SEALS) on the passed per-client secret failed: {}", fd,
                  event::last_error().message());
    return std::nullopt;
  }
  // Anything else is not what an old master made: a secret someone could still change.
  if ((seals & kSeals) != kSeals) {
    spdlog::error("passed fd {} is not a sealed per-client secret", fd);
    return std::nullopt;
  }
  if (::fcntl(fd, F_SETFD, FD_CLOEXEC) == -1) {
    spdlog::error("fcntl({}, F_SETFD, FD_CLOEXEC) failed: {}", fd, event::last_error().message());
    return std::nullopt;
  }
  const auto read = event::all_bytes(s.value_.size(), [&](std::size_t done, std::size_t left) {
    return ::pread(fd, s.value_.data() + done, left, static_cast<off_t>(done));
  });
  if (!read.complete) {
    spdlog::error("reading the passed per-client secret failed: {}",
                  read.error ? read.error.message() : std::string("end of file"));
    return std::nullopt;
  }
  return s;
}

}  // namespace ferry::worker
