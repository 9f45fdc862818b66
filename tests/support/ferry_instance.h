// A running ferry (master + workers) for integration tests: its own folder, configuration, pid
// file and stderr; helpers to find its workers, reload it and stop it — every wait bounded.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "tests/support/process.h"

namespace ferry::test {

// The command line stored in /proc/PID/cmdline, NULs as spaces ("" when gone).
std::string process_title(pid_t pid);
// Live children of `parent` (from /proc).
std::set<pid_t> children_of(pid_t parent);
// utime + stime of `pid`, in clock ticks (fields 14 and 15 of /proc/PID/stat); 0 when gone.
long cpu_ticks(pid_t pid);
// The threads `pid` runs (its /proc/PID/task entries).
std::size_t thread_count(pid_t pid);
// In `ferry -s status`'s output, the counts of proxy `name`: accepted, handled, active, denied,
// limited, no_connections (empty when absent).
std::vector<long> status_proxy_row(const std::string& status, const std::string& name);
// How many times slower the sanitizer builds run (their test setups set FERRY_SANITIZED): the
// same checks with bounds this many times longer.
int sanitizer_slowdown();
// How many times `what` occurs in `text`.
std::size_t count_in(const std::string& text, const std::string& what);
// Polls `done` every 10 ms until it holds or `limit` passes.
template <typename Done>
bool eventually(Done&& done, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return done();
    ::usleep(10'000);
  }
  return true;
}

// A body for FerryInstance: `workers` workers and one proxy "web" from 127.0.0.1:`port` to
// 127.0.0.1:`backend`, without an access log.
std::string one_proxy_config(int workers, int port, int backend);

class FerryInstance {
 public:
  // `body` is the configuration without pid_file and log, which the instance adds.
  explicit FerryInstance(const std::string& body, const std::string& log_level = "info");
  ~FerryInstance();

  // Starts the master and waits until every worker reported serving.
  bool start(std::chrono::milliseconds limit = std::chrono::seconds(10));
  // For start(): the environment, and a program that runs ferry (systemd-socket-activate ...).
  void set_options(ProcessOptions options) { options_ = std::move(options); }
  void set_launcher(std::vector<std::string> prefix) { launcher_ = std::move(prefix); }
  void rewrite(const std::string& body);
  // `ferry -s SIGNAL -c conf` with its result; command_line() for a test that runs it alongside.
  Finished command(const std::string& signal);
  [[nodiscard]] std::vector<std::string> command_line(const std::string& signal) const;
  // `ferry -c conf ctl WORDS...` (`words` split at spaces) with its result.
  Finished ctl(const std::string& words);
  // For command(): a program that runs `ferry -s` (the sandbox ferry itself runs in).
  void set_command_launcher(std::vector<std::string> prefix) {
    command_launcher_ = std::move(prefix);
  }
  [[nodiscard]] pid_t master() const { return process_->pid(); }
  [[nodiscard]] std::set<pid_t> workers() const { return children_of(master()); }
  // A binary upgrade (USR2): waits until the new master wrote the pid file and `workers` of its
  // workers run. Returns the new master (0 when it did not serve within `limit`), which the
  // destructor kills if it is still there (it is not our child).
  pid_t upgrade(std::size_t workers, std::chrono::milliseconds limit = std::chrono::seconds(10));
  // The master's workers without the new master of an upgrade (also its child).
  [[nodiscard]] std::set<pid_t> own_workers() const;
  [[nodiscard]] const std::string& pid_file() const noexcept { return pid_file_; }
  [[nodiscard]] const std::string& conf() const noexcept { return conf_; }
  [[nodiscard]] const TempDir& dir() const noexcept { return dir_; }
  bool wait_for_log(const std::string& text,
                    std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    return process_->wait_for_stderr(text, limit);
  }
  [[nodiscard]] const std::string& log() const { return process_->stderr_so_far(); }
  void drain_log() { process_->drain(); }
  void signal(int sig) { process_->signal(sig); }
  Finished wait(std::chrono::milliseconds limit = std::chrono::seconds(20)) {
    return process_->wait(limit);
  }

 private:
  TempDir dir_;
  std::string conf_;
  std::string pid_file_;
  std::string log_level_;
  ProcessOptions options_;
  std::vector<std::string> launcher_;
  std::vector<std::string> command_launcher_;
  std::unique_ptr<Process> process_;
  pid_t new_master_ = 0;
};

// The pid written in `file` (0 when there is none).
pid_t pid_in(const std::string& file);

}  // namespace ferry::test
