// AccessLog: formatting on the loop thread, an async spdlog logger with an O_APPEND sink that
// can be reopened, one write(2) per line on the writer thread.
#include "worker/proxy/access_log.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <utility>

#include <spdlog/async.h>
#include <spdlog/async_logger.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include "event/syscall_util.h"

namespace ferry::worker {

std::string_view to_string(EndReason reason) noexcept {
  switch (reason) {
    case EndReason::closed: return "closed";
    case EndReason::idle_timeout: return "idle_timeout";
    case EndReason::connect_failed: return "connect_failed";
    case EndReason::upstream_reset: return "upstream_reset";
    case EndReason::client_reset: return "client_reset";
    case EndReason::denied: return "denied";
    case EndReason::limit: return "limit";
    case EndReason::no_connections: return "no_connections";
    case EndReason::bad_proxy_protocol: return "bad_proxy_protocol";
    case EndReason::untrusted_proxy: return "untrusted_proxy";
    case EndReason::shutdown: return "shutdown";
    case EndReason::killed: return "killed";
    case EndReason::not_tls: return "not_tls";
    case EndReason::bad_client_hello: return "bad_client_hello";
    case EndReason::no_route: return "no_route";
    case EndReason::preread_timeout: return "preread_timeout";
    case EndReason::tls_handshake_failed: return "tls_handshake_failed";
    case EndReason::tls_handshake_timeout: return "tls_handshake_timeout";
  }
  return "closed";
}

std::string format_access_record(const AccessRecord& r) {
  const std::string_view status = to_string(r.status);
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
      static_cast<long long>(r.duration.count() % 1000), static_cast<int>(status.size()),
      status.data());
  std::string out(line,
                  n > 0 ? std::min<std::size_t>(static_cast<std::size_t>(n), sizeof line - 1) : 0);
  // A session a reload moved says so after its status: a field only such lines have.
  if (r.moves > 0 && !out.empty()) {
    out.insert(out.size() - 1, " moves=" + std::to_string(r.moves));
  }
  // A routing proxy's lines name the hello's server name and the route (both "-" when none):
  // the name is a client's bytes, already restricted to host-name characters by the parser.
  if (!r.tls_version.empty() && !out.empty()) {
    std::string tls = " tls=" + std::string(r.tls_version);
    if (!r.client_subject.empty()) {
      // Quoted, with quotes and backslashes escaped: a subject has spaces and commas.
      tls += " subject=\"";
      for (const char c : r.client_subject) {
        if (c == '"' || c == '\\') tls += '\\';
        tls += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
      }
      tls += '"';
    }
    out.insert(out.size() - 1, tls);
  }
  if (r.routed && !out.empty()) {
    out.insert(out.size() - 1, " sni=" + std::string(r.sni.empty() ? "-" : r.sni) +
                                   " route=" + std::string(r.route.empty() ? "-" : r.route));
  }
  return out;
}

// The lines arrive formatted (the payload is the whole line), so no pattern is applied.
// base_sink's mutex orders the writer thread's appends against a reopen from the loop thread.
class AppendFileSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit AppendFileSink(std::string path) : path_(std::move(path)) {}

  // Opens the file again (logrotate moved it); on failure the old file stays in use.
  bool reopen() {
    event::UniqueFd fd(::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644));
    if (!fd) {
      spdlog::error("cannot open access log {}: {}", path_, event::last_error().message());
      return false;
    }
    std::lock_guard lock(mutex_);
    fd_ = std::move(fd);
    return true;
  }

  // Write failures since the last call and the last errno (0: a short write). Reported by the
  // loop thread: the writer thread must not touch spdlog's default logger, which the loop
  // replaces on reopen.
  std::pair<std::uint64_t, int> take_failures() noexcept {
    return {failures_.exchange(0, std::memory_order_relaxed),
            last_errno_.load(std::memory_order_relaxed)};
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    if (!fd_) return;
    const std::string_view line(msg.payload.data(), msg.payload.size());
    const ssize_t n =
        event::retry_eintr([&] { return ::write(fd_.get(), line.data(), line.size()); });
    if (n != static_cast<ssize_t>(line.size())) {
      last_errno_.store(n == -1 ? errno : 0, std::memory_order_relaxed);
      failures_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  void flush_() override {}
  void set_pattern_(const std::string&) override {}
  void set_formatter_(std::unique_ptr<spdlog::formatter>) override {}

 private:
  std::string path_;
  event::UniqueFd fd_;
  std::atomic<std::uint64_t> failures_{0};
  std::atomic<int> last_errno_{0};
};

AccessLog::AccessLog(std::string path, std::shared_ptr<spdlog::details::thread_pool> writer)
    : path_(std::move(path)), sink_(std::make_shared<AppendFileSink>(path_)) {
  logger_ = std::make_shared<spdlog::async_logger>("access", sink_, std::move(writer),
                                                   spdlog::async_overflow_policy::block);
  logger_->set_level(spdlog::level::info);
  sink_->reopen();
}

AccessLog::~AccessLog() = default;

bool AccessLog::open() { return sink_->reopen(); }

void AccessLog::write(const AccessRecord& r) {
  const std::string line = format_access_record(r);
  logger_->log(spdlog::level::info, std::string_view(line));
  if (const auto [failed, err] = sink_->take_failures(); failed > 0) {
    failed_ += failed;
    if (auto held = failures_log_.admit(event::monotonic_now())) {
      spdlog::error("{} line(s) could not be written to access log {}: {}", failed_, path_,
                    err != 0 ? event::errno_code(err).message() : std::string("short write"));
      failed_ = 0;
    }
  }
}

std::shared_ptr<spdlog::details::thread_pool> AccessLog::make_writer() {
  // Signals are the loop's (the worker handles them there): the thread starts with all blocked.
  sigset_t all;
  sigset_t previous;
  sigfillset(&all);
  if (const int err = pthread_sigmask(SIG_SETMASK, &all, &previous); err != 0) {
    spdlog::error("pthread_sigmask() failed: {}", event::errno_code(err).message());
  }
  std::shared_ptr<spdlog::details::thread_pool> writer;
  try {
    writer = std::make_shared<spdlog::details::thread_pool>(kQueueLines, 1);
  } catch (const std::exception& e) {  // no thread (TasksMax, memory): the caller logs nothing
    spdlog::error("cannot start the access log writer: {}", e.what());
  }
  if (const int err = pthread_sigmask(SIG_SETMASK, &previous, nullptr); err != 0) {
    spdlog::error("pthread_sigmask() failed: {}", event::errno_code(err).message());
  }
  return writer;
}

}  // namespace ferry::worker
