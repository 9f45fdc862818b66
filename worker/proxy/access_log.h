// The access log: one line per finished session, appended to the proxy's access_log file —
// time, client, listen address, upstream server, bytes from and to the client, duration, and
// how the session ended. Written by a thread of its own so that a slow disk never stalls the
// event loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "event/log_throttle.h"

namespace spdlog {
class async_logger;
namespace details {
class thread_pool;
}
}  // namespace spdlog

namespace ferry::worker {

// How a session ended, as the access log writes it (the spec lists them).
enum class EndReason : std::uint8_t {
  closed,
  idle_timeout,
  connect_failed,
  upstream_reset,
  client_reset,
  denied,          // the proxy's access rules
  limit,           // max_conns_per_client
  no_connections,  // worker_connections was full
  bad_proxy_protocol,
  untrusted_proxy,  // a PROXY header from a sender not in accept_proxy_protocol_from
  shutdown,
  killed,  // by the operator (`set server ... maint --kill`, `kill sessions`)
  // A routing proxy without a default route (`upstream`): what the client sent first was
  not_tls,           // not a TLS handshake
  bad_client_hello,  // a TLS handshake, but not a well-formed ClientHello (or over 16 KiB)
  no_route,          // a ClientHello no route takes
  preread_timeout,   // not a whole ClientHello within preread_timeout
  // A proxy that terminates TLS: the client's handshake failed (no common version or suite,
  // a certificate refused, not TLS at all) or did not end within handshake_timeout.
  tls_handshake_failed,
  tls_handshake_timeout,
};
std::string_view to_string(EndReason reason) noexcept;

struct AccessRecord {
  std::chrono::system_clock::time_point start;
  std::string_view client;
  std::string_view listen;
  std::string_view upstream;  // "-" when no server was reached
  std::uint64_t bytes_from_client = 0;
  std::uint64_t bytes_to_client = 0;
  std::chrono::milliseconds duration{0};
  EndReason status = EndReason::closed;
  std::uint16_t moves = 0;  // how often a reload moved it to another worker ("moves=N" if any)
  // A routing proxy's session: "sni=NAME route=ROUTE" (sni=- when it sent none).
  bool routed = false;
  std::string_view sni;
  std::string_view route;
  // A session whose TLS ferry terminated: "tls=TLSv1.3", and subject="..." with a client
  // certificate; empty for others.
  std::string_view tls_version;
  std::string_view client_subject;
};

// "2026-11-22T08:55:35.123+0000 127.0.0.1:5555 127.0.0.1:8080 127.0.0.1:9001 5 5 0.003 closed"
std::string format_access_record(const AccessRecord& r);

class AppendFileSink;

// One file. The loop thread formats the line and queues it (spdlog's async logger); the writer
// thread appends it with one write(2), so lines from several workers never interleave.
class AccessLog {
 public:
  // Lines queued beyond this wait for the writer (the loop blocks only when the disk has been
  // this far behind: losing lines silently would be worse).
  static constexpr std::size_t kQueueLines = 8192;

  // `writer`: the thread that writes every access log of this worker.
  AccessLog(std::string path, std::shared_ptr<spdlog::details::thread_pool> writer);
  ~AccessLog();
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  // Opens (again, after logrotate) with O_APPEND; false with the error logged. After a failure
  // nothing is written (and nothing more logged) until the next open(): USR1 / -s reopen.
  bool open();
  // Queues the line. Lines still queued when the log goes are written before the writer
  // thread ends (the queue holds the logger).
  void write(const AccessRecord& r);
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

  // The writer thread for a worker's access logs; null (logged) when it cannot be started.
  static std::shared_ptr<spdlog::details::thread_pool> make_writer();

 private:
  std::string path_;
  std::shared_ptr<AppendFileSink> sink_;
  std::shared_ptr<spdlog::async_logger> logger_;
  std::uint64_t failed_ = 0;  // lines lost since the last error message
  event::LogThrottle failures_log_{std::chrono::milliseconds{5'000}};
};

}  // namespace ferry::worker
