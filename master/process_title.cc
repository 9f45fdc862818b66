// set_process_title(): the argv strings and the environment strings after them are one
// contiguous block; copy the environment elsewhere and use the whole block for the title.
#include "master/process_title.h"

#include <sys/prctl.h>

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

}  // namespace

void init_process_title(int argc, char** argv) {
  for (int i = 0; i < argc; ++i) {
    if (i > 0) g_command_line += ' ';
    g_command_line += argv[i];
    g_arguments.emplace_back(argv[i]);
  }
  if (argc == 0) return;
  // Resolved now: the path, not /proc/self/exe, names the binary an upgrade installed.
  if (char* real = ::realpath(argv[0], nullptr)) {
    g_binary = real;
    std::free(real);
  } else {
    g_binary = argv[0];
  }
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
