// Test helper: runs a real program (the ferry binary) with its output captured, waits for
// lines to appear and for it to exit — every wait bounded.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace ferry::test {

struct Finished {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;
  std::string out;
  std::string err;
};

// Runs `argv` to completion (killed after `limit`).
Finished run_program(const std::vector<std::string>& argv,
                     std::chrono::milliseconds limit = std::chrono::seconds(20));

// How a Process is started besides its command line.
struct ProcessOptions {
  std::vector<std::string> env;  // "NAME=value" added to (or replacing in) the test's own
  // Sets JOURNAL_STREAM to the identity of the program's stderr, as systemd does when stderr
  // is the journal.
  bool journal_stderr = false;
};

// A program left running while the test talks to it.
class Process {
 public:
  explicit Process(const std::vector<std::string>& argv, const ProcessOptions& options = {});
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  // Reads stderr until `text` appears in it; false after `limit` or at EOF.
  bool wait_for_stderr(const std::string& text,
                       std::chrono::milliseconds limit = std::chrono::seconds(10));
  void signal(int sig);
  // Waits for exit (killing with SIGKILL after `limit`); collects the remaining output.
  Finished wait(std::chrono::milliseconds limit = std::chrono::seconds(10));
  [[nodiscard]] const std::string& stderr_so_far() const noexcept { return err_; }
  // Reads whatever output is waiting, without blocking: a program that logs a lot would
  // otherwise stall on a full pipe.
  void drain();

 private:
  void pump(std::chrono::milliseconds limit);

  pid_t pid_ = -1;
  int out_fd_ = -1;
  int err_fd_ = -1;
  std::string out_;
  std::string err_;
  std::optional<Finished> finished_;
};

// Whether process `pid` exists (a zombie too: it is gone once reaped).
bool alive(pid_t pid);

// A process that is not the test's child (a new master after an upgrade): killed with SIGKILL
// when the guard goes, so that no failed test leaves it running.
struct KillOnExit {
  pid_t pid = 0;
  KillOnExit() = default;
  explicit KillOnExit(pid_t p) : pid(p) {}
  ~KillOnExit();
  KillOnExit(const KillOnExit&) = delete;
  KillOnExit& operator=(const KillOnExit&) = delete;
};

// The path of the ferry binary under test (FERRY_BINARY from meson).
std::string ferry_binary();
// A loopback TCP port that was free a moment ago.
int free_port();
// A listening socket on 127.0.0.1 with a kernel-chosen port, held until the object is destroyed.
class HeldPort {
 public:
  HeldPort();
  ~HeldPort();
  HeldPort(const HeldPort&) = delete;
  HeldPort& operator=(const HeldPort&) = delete;
  [[nodiscard]] int port() const noexcept { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};
// A fresh temporary folder, removed by the caller's TempDir.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  std::string write(const std::string& name, const std::string& content) const;

 private:
  std::string path_;
};

// errno of open(path, O_RDWR) by a forked process of `uid` and `gid` (0: it opened; -1: the
// child could not be waited for).
int open_errno_as(uid_t uid, gid_t gid, const std::string& path);

}  // namespace ferry::test
