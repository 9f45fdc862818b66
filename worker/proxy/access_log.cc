// AccessLog: formatting and O_APPEND writes (one write(2) per line, so lines from several
// workers never interleave).
#include "worker/proxy/access_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>

#include <spdlog/spdlog.h>

namespace ferry::worker {

std::string format_access_record(const AccessRecord& r) {
  const auto since_epoch = r.start.time_since_epoch();
  const std::time_t secs = std::chrono::duration_cast<std::chrono::seconds>(since_epoch).count();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(since_epoch).count() % 1000;
  std::tm tm{};
  ::localtime_r(&secs, &tm);
  char when[40];
  char zone[8];
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  std::strftime(zone, sizeof zone, "%z", &tm);
  char line[512];
  const int n = std::snprintf(
      line, sizeof line, "%s.%03lld%s %.*s %.*s %.*s %llu %llu %lld.%03lld %.*s\n", when,
      static_cast<long long>(ms), zone, static_cast<int>(r.client.size()), r.client.data(),
      static_cast<int>(r.listen.size()), r.listen.data(), static_cast<int>(r.upstream.size()),
      r.upstream.data(), static_cast<unsigned long long>(r.bytes_from_client),
      static_cast<unsigned long long>(r.bytes_to_client),
      static_cast<long long>(r.duration.count() / 1000),
      static_cast<long long>(r.duration.count() % 1000), static_cast<int>(r.status.size()),
      r.status.data());
  return std::string(
      line, n > 0 ? std::min<std::size_t>(static_cast<std::size_t>(n), sizeof line - 1) : 0);
}

bool AccessLog::open() {
  tried_ = true;
  event::UniqueFd fd(::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644));
  if (!fd) {
    spdlog::error("cannot open access log {}: {}", path_, event::last_error().message());
    return false;
  }
  fd_ = std::move(fd);
  return true;
}

void AccessLog::write(const AccessRecord& r) {
  if (!fd_ && (tried_ || !open())) return;
  const std::string line = format_access_record(r);
  if (::write(fd_.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    spdlog::error("write to access log {} failed: {}", path_, event::last_error().message());
  }
}

}  // namespace ferry::worker
