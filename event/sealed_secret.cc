// SealedSecret: making a sealed memfd that holds a secret, and reading one an old master passed.
#include "event/sealed_secret.h"

#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>
#include <utility>

#include <spdlog/spdlog.h>

#include "event/passed_memfd.h"

namespace ferry::event {
namespace {

constexpr int kSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;

std::string why_not(const AllBytes& moved, const char* none) {
  return moved.error ? moved.error.message() : std::string(none);
}

}  // namespace

std::optional<SealedSecret> SealedSecret::create(const char* name, std::string_view what,
                                                 std::span<const unsigned char> bytes) noexcept {
  UniqueFd fd(::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) {
    spdlog::critical("memfd_create() for the {} failed: {}", what, last_error().message());
    return std::nullopt;
  }
  const auto written = all_bytes(bytes.size(), [&](std::size_t done, std::size_t left) {
    return ::pwrite(fd.get(), bytes.data() + done, left, static_cast<off_t>(done));
  });
  if (!written.complete) {
    spdlog::critical("writing the {} to its memfd failed: {}", what,
                     why_not(written, "no bytes written"));
    return std::nullopt;
  }
  // No writable mapping of it exists, so F_SEAL_WRITE is taken; F_SEAL_SEAL keeps it.
  if (::fcntl(fd.get(), F_ADD_SEALS, kSeals | F_SEAL_SEAL) == -1) {
    spdlog::critical("sealing the {}'s memfd (F_ADD_SEALS) failed: {}", what,
                     last_error().message());
    return std::nullopt;
  }
  return SealedSecret(std::move(fd));
}

std::optional<SealedSecret> SealedSecret::adopt(UniqueFd passed, const char* name,
                                                std::string_view what,
                                                std::span<unsigned char> out) noexcept {
  const int fd = passed.get();
  const auto refused = [&] {
    ::explicit_bzero(out.data(), out.size());
    return std::nullopt;
  };
  if (const auto check = check_passed_memfd(fd, {name, out.size()}); !check.ok()) {
    spdlog::error("the passed {} is not taken: {}", what, check.reason);
    return refused();
  }
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals == -1) {
    spdlog::error("fcntl({}, F_GET_SEALS) on the passed {} failed: {}", fd, what,
                  last_error().message());
    return refused();
  }
  // Anything else is not what an old master made: a secret someone could still change.
  if ((seals & kSeals) != kSeals) {
    spdlog::error("passed fd {} is not a sealed {}", fd, what);
    return refused();
  }
  if (::fcntl(fd, F_SETFD, FD_CLOEXEC) == -1) {
    spdlog::error("fcntl({}, F_SETFD, FD_CLOEXEC) on the passed {} failed: {}", fd, what,
                  last_error().message());
    return refused();
  }
  const auto read = all_bytes(out.size(), [&](std::size_t done, std::size_t left) {
    return ::pread(fd, out.data() + done, left, static_cast<off_t>(done));
  });
  if (!read.complete) {
    spdlog::error("reading the passed {} failed: {}", what, why_not(read, "end of file"));
    return refused();
  }
  return SealedSecret(std::move(passed));
}

bool SealedSecret::pass_to_exec(std::string_view what) const noexcept {
  if (!fd_) return false;
  if (::fcntl(fd_.get(), F_SETFD, 0) == -1) {
    spdlog::error("fcntl({}, F_SETFD, 0) for the {} failed: {}", fd_.get(), what,
                  last_error().message());
    return false;
  }
  return true;
}

}  // namespace ferry::event
