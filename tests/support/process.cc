// Process helpers: posix_spawn with pipes, poll-driven reads, bounded waits.
#include "tests/support/process.h"

#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

extern char** environ;

namespace ferry::test {
namespace {

using Clock = std::chrono::steady_clock;

// In a sanitizer run (FERRY_SANITIZER_REPORTS names the folder tests/sanitizers/run counts), a
// report in the program's stderr is kept there too: gcc 12's UBSan ignores log_path when linked
// with ASan, and a worker's report would otherwise only fail the test that happened to look.
void keep_sanitizer_report(pid_t pid, const std::string& err) {
  const char* dir = std::getenv("FERRY_SANITIZER_REPORTS");
  if (dir == nullptr || *dir == '\0' || pid <= 0) return;
  for (const char* marker : {"runtime error: ", "ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                             "WARNING: ThreadSanitizer", "ERROR: UndefinedBehaviorSanitizer"}) {
    if (err.find(marker) == std::string::npos) continue;
    std::ofstream out(std::string(dir) + "/stderr." + std::to_string(pid));
    out << err;
    return;
  }
}

}  // namespace

namespace {

// The test's environment with `extra` added, a name in `extra` replacing the inherited one.
std::vector<std::string> environment_with(const std::vector<std::string>& extra) {
  std::vector<std::string> out = extra;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const std::string name = entry.substr(0, entry.find('=') + 1);
    bool replaced = false;
    for (const auto& x : extra) replaced = replaced || x.rfind(name, 0) == 0;
    if (!replaced) out.push_back(entry);
  }
  return out;
}

}  // namespace

Process::Process(const std::vector<std::string>& argv, const ProcessOptions& options) {
  int out[2];
  int err[2];
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
    throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
  }
  std::vector<std::string> extra = options.env;
  if (options.journal_stderr) {
    struct stat st {};
    ::fstat(err[1], &st);
    extra.push_back("JOURNAL_STREAM=" + std::to_string(st.st_dev) + ":" +
                    std::to_string(st.st_ino));
  }
  const std::vector<std::string> env_strings = environment_with(extra);
  std::vector<char*> env;
  for (const auto& e : env_strings) env.push_back(const_cast<char*>(e.c_str()));
  env.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err[1], 2);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const int rc = ::posix_spawnp(&pid_, args[0], &actions, nullptr, args.data(), env.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  ::close(err[1]);
  out_fd_ = out[0];
  err_fd_ = err[0];
  if (rc != 0) {
    pid_ = -1;
    throw std::runtime_error("posix_spawn " + argv[0] + ": " + std::strerror(rc));
  }
}

Process::~Process() {
  if (pid_ > 0 && !finished_) {
    ::kill(pid_, SIGKILL);
    int status;
    ::waitpid(pid_, &status, 0);
    drain();
  }
  keep_sanitizer_report(pid_, err_);
  if (out_fd_ >= 0) ::close(out_fd_);
  if (err_fd_ >= 0) ::close(err_fd_);
}

void Process::pump(std::chrono::milliseconds limit) {
  pollfd fds[2] = {{out_fd_, POLLIN, 0}, {err_fd_, POLLIN, 0}};
  const int n = ::poll(fds, 2, static_cast<int>(limit.count()));
  if (n <= 0) return;
  char buf[8192];
  for (int i = 0; i < 2; ++i) {
    if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
    const ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
    std::string& into = i == 0 ? out_ : err_;
    int& fd = i == 0 ? out_fd_ : err_fd_;
    if (got > 0) {
      into.append(buf, static_cast<std::size_t>(got));
    } else if (got == 0) {
      ::close(fd);
      fd = -1;
    }
  }
}

bool Process::wait_for_stderr(const std::string& text, std::chrono::milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  while (err_.find(text) == std::string::npos) {
    if (err_fd_ < 0) return false;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    pump(left);
  }
  return true;
}

void Process::drain() {
  for (;;) {
    const std::size_t before = out_.size() + err_.size();
    if (out_fd_ < 0 && err_fd_ < 0) return;
    pump(std::chrono::milliseconds(0));
    if (out_.size() + err_.size() == before) return;
  }
}

void Process::signal(int sig) {
  if (pid_ > 0 && !finished_) ::kill(pid_, sig);
}

Finished Process::wait(std::chrono::milliseconds limit) {
  if (finished_) return *finished_;
  const auto deadline = Clock::now() + limit;
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) break;
    if (Clock::now() >= deadline) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    pump(std::chrono::milliseconds(20));
  }
  // The pipes close when the last holder (the program, or a child it left) exits.
  const auto drain_deadline = Clock::now() + std::chrono::seconds(2);
  while ((out_fd_ >= 0 || err_fd_ >= 0) && Clock::now() < drain_deadline) {
    pump(std::chrono::milliseconds(50));
  }
  Finished f;
  f.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  f.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  f.out = out_;
  f.err = err_;
  finished_ = f;
  return f;
}

Finished run_program(const std::vector<std::string>& argv, std::chrono::milliseconds limit) {
  Process p(argv);
  return p.wait(limit);
}

std::string ferry_binary() {
  const char* path = std::getenv("FERRY_BINARY");
  if (path == nullptr || *path == '\0') throw std::runtime_error("FERRY_BINARY is not set");
  return path;
}

int free_port() {
  // Below the kernel's ephemeral range (32768-60999 here): the many client connections other
  // tests open at the same time take their ports from that range, and one of them could land
  // on a port returned here before ferry binds it. Random, so parallel tests spread out.
  static unsigned seed = static_cast<unsigned>(::getpid()) * 2654435761U ^
                         static_cast<unsigned>(Clock::now().time_since_epoch().count());
  for (int attempt = 0; attempt < 200; ++attempt) {
    seed = seed * 1103515245U + 12345U;
    const int port = 20000 + static_cast<int>((seed >> 8) % 12000);
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) break;
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons(static_cast<std::uint16_t>(port));
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin) == 0;
    ::close(fd);
    if (ok) return port;
  }
  throw std::runtime_error("free_port: no free port in 20000-31999");
}

HeldPort::HeldPort() {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sin;
  if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0 ||
      ::listen(fd_, 1) != 0 || ::getsockname(fd_, reinterpret_cast<sockaddr*>(&sin), &len) != 0) {
    throw std::runtime_error(std::string("HeldPort: ") + std::strerror(errno));
  }
  port_ = ntohs(sin.sin_port);
}

HeldPort::~HeldPort() {
  if (fd_ >= 0) ::close(fd_);
}

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "ferry-test-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
  }
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TempDir::write(const std::string& name, const std::string& content) const {
  const std::string full = path_ + "/" + name;
  std::filesystem::create_directories(std::filesystem::path(full).parent_path());
  std::ofstream(full) << content;
  return full;
}

int open_errno_as(uid_t uid, gid_t gid, const std::string& path) {
  const pid_t child = ::fork();
  if (child == 0) {
    if (::setgroups(0, nullptr) == -1 || ::setgid(gid) == -1 || ::setuid(uid) == -1) _exit(255);
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    _exit(fd >= 0 ? 0 : errno);
  }
  int status = 0;
  if (child == -1 || ::waitpid(child, &status, 0) != child || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

bool alive(pid_t pid) { return pid > 0 && ::kill(pid, 0) == 0; }

KillOnExit::~KillOnExit() {
  if (alive(pid)) ::kill(pid, SIGKILL);
}

}  // namespace ferry::test
