// set_process_title(): the argv strings and the environment strings after them are one
// contiguous block; copy the environment elsewhere and use the whole block for the title.
#include "master/process_title.h"

#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <vector>

extern char** environ;

namespace ferry::master {
namespace {

char* g_area = nullptr;
std::size_t g_area_size = 0;
std::string g_command_line;
std::vector<std::string> g_arguments;
std::string g_binary;
std::vector<std::string> g_env_copy;
std::vector<char*> g_env_pointers;

// `name` joined to the current folder (nothing when the folder cannot be had).
std::string from_cwd(const std::string& name) {
  char* cwd = ::getcwd(nullptr, 0);
  if (cwd == nullptr) return "";
  std::string out = cwd;
  std::free(cwd);
  return out + (out.ends_with('/') ? "" : "/") + name;
}

// The binary as argv[0] named it, made absolute without resolving links: an upgrade executes
// what that path names then (a link switched to a new release, /opt/ferry/current or
// update-alternatives). A name without a slash is looked up in PATH, as the shell did.
std::string absolute_binary(const std::string& arg0) {
  if (arg0.starts_with('/')) return arg0;
  if (arg0.find('/') != std::string::npos) return from_cwd(arg0);
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  for (std::size_t pos = 0; pos <= dirs.size();) {
    std::size_t end = dirs.find(':', pos);
    if (end == std::string::npos) end = dirs.size();
    const std::string dir = dirs.substr(pos, end - pos);  // empty: the current folder
    pos = end + 1;
    std::string candidate = (dir.empty() ? "." : dir) + "/" + arg0;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return candidate.starts_with('/') ? candidate : from_cwd(candidate);
    }
  }
  return "";
}

}  // namespace

// argv[0] is whatever the starter chose (`exec -a`, a PATH other than the one the shell searched,
// a link switched since): trusted only when it names this very binary now, else the binary
// itself (its path as the kernel knows it).
std::string upgrade_binary_for(const std::string& arg0) {
  std::string named = absolute_binary(arg0);
  struct stat mine {};
  if (::stat("/proc/self/exe", &mine) == -1) return named.empty() ? arg0 : named;  // no /proc
  struct stat st {};
  if (!named.empty() && ::stat(named.c_str(), &st) == 0 && st.st_dev == mine.st_dev &&
      st.st_ino == mine.st_ino) {
    return named;
  }
  char target[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", target, sizeof target - 1);
  const std::string exe(target, n > 0 ? static_cast<std::size_t>(n) : 0);
  // Replaced since it started (two package upgrades in a row): that path execs nothing.
  if (exe.empty() || exe.ends_with(" (deleted)")) return named.empty() ? arg0 : named;
  return exe;
}

void init_process_title(int argc, char** argv) {
  for (int i = 0; i < argc; ++i) {
    if (i > 0) g_command_line += ' ';
    g_command_line += argv[i];
    g_arguments.emplace_back(argv[i]);
  }
  if (argc == 0) return;
  // Made absolute now (a later chdir must not change it), but the path, not /proc/self/exe nor
  // a link's target, names the binary an upgrade installed.
  g_binary = upgrade_binary_for(argv[0]);
  char* end = argv[0];
  for (int i = 0; i < argc; ++i) {
    if (argv[i] == end) end = argv[i] + std::strlen(argv[i]) + 1;
  }
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (*e == end) end = *e + std::strlen(*e) + 1;
  }
  // Move the environment strings to memory of our own.
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) g_env_copy.emplace_back(*e);
  for (auto& s : g_env_copy) g_env_pointers.push_back(s.data());
  g_env_pointers.push_back(nullptr);
  environ = g_env_pointers.data();

  g_area = argv[0];
  g_area_size = static_cast<std::size_t>(end - argv[0]);
}

void set_process_title(const std::string& title) {
  if (g_area == nullptr || g_area_size < 2) return;
  const std::size_t n = std::min(title.size(), g_area_size - 1);
  std::memcpy(g_area, title.data(), n);
  std::memset(g_area + n, 0, g_area_size - n);
  // The short name in /proc/PID/comm (top, pgrep) as well: 15 characters.
  ::prctl(PR_SET_NAME, title.substr(0, 15).c_str(), 0, 0, 0);
}

const std::string& original_command_line() { return g_command_line; }
const std::vector<std::string>& original_arguments() { return g_arguments; }
const std::string& binary_path() { return g_binary; }

}  // namespace ferry::master
