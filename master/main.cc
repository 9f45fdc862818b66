// ferry's entry point: the command line, configuration test and dump, and the run mode.
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "conf/loader.h"
#include "conf/printer.h"
#include "event/syscall_util.h"
#include "ferry_version.h"
#include "master/cli.h"
#include "master/console.h"
#include "master/control.h"
#include "master/control_server.h"
#include "master/inherited_fds.h"
#include "master/master_cycle.h"
#include "master/process_title.h"
#include "worker/logging.h"

namespace ferry::master {
namespace {

void print_errors(const std::vector<conf::ConfigError>& list) {
  for (const auto& e : list) print_error(e.to_string());
}

void print_warnings(const std::vector<conf::ConfigError>& list) {
  for (const auto& e : list) print_warning("warning: " + e.to_string());
}

int test_configuration(const CommandLine& cl) {
  const conf::LoadResult result = conf::load_file(cl.conf_file);
  print_errors(result.errors);
  if (!result.config) {
    print_error("ferry: configuration file " + cl.conf_file + " test failed");
    return 1;
  }
  // Checked here, not by the loader: the socket's path is the master's business.
  if (const auto why = control_path_too_long(control_socket_path(result.config->pid_file))) {
    print_error("ferry: " + *why + " (from pid_file " + result.config->pid_file + ")");
    print_error("ferry: configuration file " + cl.conf_file + " test failed");
    return 1;
  }
  if (!cl.quiet) print_warnings(result.warnings);
  if (cl.action == Action::dump) std::fputs(conf::to_text(*result.config).c_str(), stdout);
  if (!cl.quiet) {
    std::fprintf(stderr, "ferry: configuration file %s test is successful\n", cl.conf_file.c_str());
  }
  return 0;
}

void print_version(bool verbose) {
  std::printf("ferry version %s\n", FERRY_VERSION);
  if (!verbose) return;
  std::printf("built with: %s\n", FERRY_BUILD_OPTIONS);
  std::printf("libraries: libconfig++ %s, spdlog %s, fmt %s, libsystemd %s\n",
              FERRY_LIBCONFIG_VERSION, FERRY_SPDLOG_VERSION, FERRY_FMT_VERSION,
              FERRY_SYSTEMD_VERSION);
  std::printf("default configuration: %s\n", FERRY_DEFAULT_CONF);
}

int run(const CommandLine& cl) {
  worker::init_early_logging();  // opens nothing: what closing says goes to stderr
  // Before anything is inherited, read or resolved (execv made a new binary's master dumpable
  // again while it holds the old master's listeners and state): workers of the master's own uid
  // (no `user`, or a master that is not root: the packaged unit) could otherwise open
  // /proc/MASTER/mem or use process_vm_writev on it. The master leaves no core dump then; its
  // workers make themselves dumpable again.
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == -1) {
    spdlog::warn(
        "prctl(PR_SET_DUMPABLE, 0) failed: {}; processes of uid {} can write the "
        "master's memory",
        ferry::event::last_error().message(), ::geteuid());
  }
  close_inherited_fds();
  conf::LoadResult result = conf::load_file(cl.conf_file);
  for (const auto& e : result.errors) spdlog::critical("{}", e.to_string());
  if (!result.config) {
    spdlog::critical("configuration file {} is invalid; not starting", cl.conf_file);
    return 1;
  }
  for (const auto& w : result.warnings) spdlog::warn("{}", w.to_string());
  std::string why;
  if (worker::apply_log_settings(result.config->log, why)) {
    spdlog::critical("cannot open the error log {}: {}", result.config->log.path, why);
    return 1;
  }
  return run_master(cl.conf_file, std::move(*result.config));
}

}  // namespace
}  // namespace ferry::master

int main(int argc, char** argv) {
  using namespace ferry::master;
  init_process_title(argc, argv);
  const std::span<const char* const> args(const_cast<const char* const*>(argv),
                                          static_cast<std::size_t>(argc));
  auto parsed = parse_command_line(args, FERRY_DEFAULT_CONF);
  if (const auto* why = std::get_if<std::string>(&parsed)) {
    std::fprintf(stderr, "ferry: %s\n%s", why->c_str(), usage().c_str());
    return 2;
  }
  const CommandLine& cl = std::get<CommandLine>(parsed);
  switch (cl.action) {
    case Action::help: std::fputs(usage().c_str(), stdout); return 0;
    case Action::version: print_version(false); return 0;
    case Action::version_verbose: print_version(true); return 0;
    case Action::test:
    case Action::dump: return test_configuration(cl);
    case Action::signal: return send_signal_command(cl.signal, cl.conf_file);
    case Action::ctl: return send_ctl_command(cl.ctl, cl.conf_file);
    case Action::run: return run(cl);
  }
  return 1;
}
