// FerryInstance and /proc helpers.
#include "tests/support/ferry_instance.h"

#include <dirent.h>
#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "tests/support/config_text.h"
#include "tests/support/sockets.h"

namespace ferry::test {

std::string process_title(pid_t pid) {
  // read_file, not ifstream: a read of a /proc file whose process just ended fails (ESRCH),
  // and libstdc++'s streams throw on that.
  std::string text = read_file("/proc/" + std::to_string(pid) + "/cmdline");
  while (!text.empty() && text.back() == '\0') text.pop_back();
  for (char& c : text) {
    if (c == '\0') c = ' ';
  }
  return text;
}

std::vector<long> status_proxy_row(const std::string& status, const std::string& name) {
  std::istringstream lines(status);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    std::string first;
    std::vector<long> row(6);
    fields >> first;
    for (long& v : row) fields >> v;
    if (fields && first == name) return row;
  }
  return {};
}

long cpu_ticks(pid_t pid) {
  const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  const auto paren = stat.rfind(')');
  if (paren == std::string::npos) return 0;
  std::istringstream in(stat.substr(paren + 2));
  std::string field;
  long ticks = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i >= 14) ticks += std::stol(field);
  }
  return ticks;
}

std::size_t thread_count(pid_t pid) {
  std::error_code ec;
  std::size_t n = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

std::set<pid_t> children_of(pid_t parent) {
  std::set<pid_t> out;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return out;
  while (const dirent* e = ::readdir(proc)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0) continue;
    const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    const auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream fields(stat.substr(close + 2));
    char state = 0;
    pid_t ppid = 0;
    fields >> state >> ppid;
    if (ppid == parent && state != 'Z') out.insert(pid);
  }
  ::closedir(proc);
  return out;
}

std::string one_proxy_config(int workers, int port, int backend) {
  return config_text(
      "worker_processes = " + std::to_string(workers) + ";\nworker_connections = 256;",
      {{.listen = {loopback(port)},
        .upstream = loopback(backend),
        .extra = "access_log = \"off\";"}});
}

FerryInstance::FerryInstance(const std::string& body, const std::string& log_level)
    : log_level_(log_level) {
  pid_file_ = dir_.path() + "/ferry.pid";
  rewrite(body);
}

FerryInstance::~FerryInstance() {
  if (alive(new_master_)) ::kill(new_master_, SIGKILL);
  if (process_) {
    process_->signal(SIGTERM);
    process_->wait(std::chrono::seconds(10));
  }
}

void FerryInstance::rewrite(const std::string& body) {
  conf_ = dir_.write("ferry.conf", "pid_file = \"" + pid_file_ + "\";\nlog = { level = \"" +
                                       log_level_ + "\"; };\n" + body);
}

bool FerryInstance::start(std::chrono::milliseconds limit) {
  std::vector<std::string> argv = launcher_;
  argv.insert(argv.end(), {ferry_binary(), "-c", conf_});
  process_ = std::make_unique<Process>(argv, options_);
  return process_->wait_for_stderr("worker(s) serving", limit);
}

std::vector<std::string> FerryInstance::command_line(const std::string& signal) const {
  std::vector<std::string> argv = command_launcher_;
  argv.insert(argv.end(), {ferry_binary(), "-s", signal, "-c", conf_});
  return argv;
}

Finished FerryInstance::ctl(const std::string& words) {
  std::vector<std::string> argv = command_launcher_;
  argv.insert(argv.end(), {ferry_binary(), "-c", conf_, "ctl"});
  std::size_t i = 0;
  while (i < words.size()) {
    const std::size_t end = std::min(words.find(' ', i), words.size());
    if (end > i) argv.push_back(words.substr(i, end - i));
    i = end + 1;
  }
  return run_program(argv, std::chrono::seconds(20));
}

Finished FerryInstance::command(const std::string& signal) {
  return run_program(command_line(signal), std::chrono::seconds(40));
}

pid_t FerryInstance::upgrade(std::size_t workers, std::chrono::milliseconds limit) {
  const pid_t old_master = master();
  signal(SIGUSR2);
  pid_t fresh = 0;
  const bool serving = eventually(
      [&] {
        fresh = pid_in(pid_file_);
        return fresh > 0 && fresh != old_master && children_of(fresh).size() == workers;
      },
      limit);
  if (fresh > 0 && fresh != old_master) new_master_ = fresh;
  return serving ? fresh : 0;
}

std::set<pid_t> FerryInstance::own_workers() const {
  std::set<pid_t> out = workers();
  out.erase(new_master_);
  return out;
}

pid_t pid_in(const std::string& file) {
  return static_cast<pid_t>(std::atol(read_file(file).c_str()));
}

int sanitizer_slowdown() { return std::getenv("FERRY_SANITIZED") != nullptr ? 5 : 1; }

std::size_t count_in(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = 0; (at = text.find(what, at)) != std::string::npos; at += what.size()) ++n;
  return n;
}

}  // namespace ferry::test
