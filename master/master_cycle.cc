// The master cycle (nginx's ngx_master_process_cycle): set up, then a small event loop of its own
// over a signalfd, the workers' channels and the control socket, until stopped. Workers are
// forked from it and never return to it.
#include "master/master_cycle.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <time.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <variant>

#include <spdlog/spdlog.h>

#include "conf/user.h"
#include "ferry_version.h"
#include "master/control.h"
#include "master/control_protocol.h"
#include "master/master.h"
#include "master/pid_file.h"
#include "master/process_title.h"
#include "master/worker_start.h"
#include "worker/logging.h"

namespace ferry::master {
namespace {

// Overrides kReadyTimeout (milliseconds), for tests only: they wait out a failed reload quickly.
constexpr const char* kReadyTimeoutVariable = "FERRY_TEST_READY_TIMEOUT_MS";
// Test only: "N" makes the workers of generation N (only) serve without ever reporting ready, as
// workers stuck in their start would (a reload then stays pending until its timeout).
constexpr const char* kUnreadyGenerationVariable = "FERRY_TEST_UNREADY_GENERATION";
// Test only: set, the new master of this master's binary upgrade gets
// FERRY_TEST_UNREADY_GENERATION=1 (its workers serve but never report ready), so that a test
// can see `ferry -s upgrade` give up on a new master that does not serve.
constexpr const char* kNewMasterUnreadyVariable = "FERRY_TEST_NEW_MASTER_UNREADY";
// Test only: "PROXIES:SERVERS", how many names the statistics registry holds (at most
// kMaxProxies and kMaxServers), so that a test fills it with a few reloads.
constexpr const char* kStatsCapacityVariable = "FERRY_TEST_STATS_CAPACITY";
// Test only: set, the health checkers' socket() fails with EMFILE, as when a worker is out of
// descriptors.
constexpr const char* kCheckNoSocketVariable = "FERRY_TEST_HEALTH_CHECK_NO_SOCKET";
// Test only: "N" makes a worker exit (code 9, as if killed) when the N-th batch of sessions moved
// to it arrives, before it answers that one: the old worker must resume what it had no answer
// for, and only that.
constexpr const char* kAdoptExitVariable = "FERRY_TEST_ADOPT_EXIT";
// For tests only: "MS" makes every worker wait MS ms before it reads the first batch of
// sessions moved to it (they stay frozen meanwhile).
constexpr const char* kAdoptPauseVariable = "FERRY_TEST_ADOPT_PAUSE_MS";

const int kSignals[] = {SIGHUP, SIGQUIT, SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCHLD};

Msec ready_timeout_from_environment() {
  const char* value = std::getenv(kReadyTimeoutVariable);
  if (value == nullptr) return kReadyTimeout;
  const long ms = std::strtol(value, nullptr, 10);
  ::unsetenv(kReadyTimeoutVariable);  // not for the workers, nor for a new binary
  return ms > 0 ? Msec{ms} : kReadyTimeout;
}

// A test hook's number (0 when unset or not a positive number), taken out of the environment.
int number_from_environment(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) return 0;
  const long n = std::strtol(value, nullptr, 10);
  ::unsetenv(name);
  return n > 0 && n <= INT_MAX ? static_cast<int>(n) : 0;
}

WorkerFailHook worker_fail_from_environment() {
  const char* value = std::getenv(kWorkerFailVariable);
  if (value == nullptr) return {};
  WorkerFailHook hook;
  int end = 0;
  if (std::sscanf(value, "%d:%d:%d%n", &hook.code, &hook.first, &hook.count, &end) != 3 ||
      value[end] != '\0') {
    spdlog::warn("{}=\"{}\" is not CODE:FIRST:COUNT; ignored", kWorkerFailVariable, value);
    hook = {};
  }
  ::unsetenv(kWorkerFailVariable);
  return hook;
}

}  // namespace

void raise_nofile_limit(const conf::Config& cfg) {
  if (!cfg.worker_rlimit_nofile) return;
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == -1) return;
  rlim_t want = static_cast<rlim_t>(*cfg.worker_rlimit_nofile);
  if (want > lim.rlim_max) {
    spdlog::warn("worker_rlimit_nofile {} is above the hard limit {}; using {}", want, lim.rlim_max,
                 lim.rlim_max);
    want = lim.rlim_max;
  }
  lim.rlim_cur = want;
  if (::setrlimit(RLIMIT_NOFILE, &lim) == -1) {
    spdlog::error("setrlimit(RLIMIT_NOFILE, {}) failed: {}", want, event::last_error().message());
  }
}

int Master::run() {
  set_process_title("ferry: master process " + original_command_line());
  worker::set_log_role("master");
  raise_nofile_limit(*config_);
  read_test_hooks();

  // A new master of a binary upgrade gets its sockets (systemd's among them) from the old one.
  upgraded_ = listeners_.adopt_inherited();
  if (upgraded_) {
    upgrade_parent_ = ::getppid();
    link_from_old_master_ = link_.adopt();
    if (!link_from_old_master_) {
      spdlog::warn("no upgrade link: sessions will not move between the masters");
    }
    if (!old_master_state_.adopt()) {
      spdlog::warn(
          "the old master shares no state page; stopping will hand the service back "
          "to it whenever it is still running");
    }
  } else {
    // A link passed without listeners is of no use: taken (its variable unset), then closed.
    if (link_.adopt()) link_.close();
    listeners_.adopt_activated();
  }
  // Also without TLS configured: a reload may bring it, and no worker may see the variable.
  ticket_secret_.take_passed(upgraded_);
  notifier_ = ServiceNotifier(upgraded_);
  if (const auto failed = listeners_.apply(*config_, config_->worker_processes)) {
    spdlog::critical("{}", *failed);
    return 1;
  }
  listeners_.close_removed();
  listeners_.advise_migrate_req(*config_);
  if (!map_shared_zones()) return 1;
  if (!build_tls(*config_, tls_)) return 1;
  load_runtime_state();
  register_stats();
  // Before the first workers: a name known to both masters keeps one index.
  const bool inheriting = segments_.inherit_first(*stats_);
  if (!new_health_board()) return 1;

  if (loop_.init({.connections = 256, .epoll_events = 64})) return 1;
  if (!open_signalfd() || !open_control_socket()) return 1;
  open_link();
  if (inheriting) arm(inherit_timer_, kInheritInterval, on_inherit_timer);
  arm(share_sweep_timer_, kShareSweepInterval, on_share_sweep_timer);
  if (write_pid_file(config_->pid_file, ::getpid())) return 1;
  pid_file_ = config_->pid_file;

  spdlog::info("ferry {} master started, pid {}, {} worker(s)", FERRY_VERSION, ::getpid(),
               config_->worker_processes);
  start_generation();
  if (notifier_.enabled()) arm(status_timer_, kStatusInterval, on_status_timer);
  if (auto period = notifier_.watchdog_period()) {
    watchdog_period_ = Msec(period->count());
    arm(watchdog_timer_, watchdog_period_, on_watchdog_timer);
    spdlog::info("systemd watchdog: pinging every {} ms while the workers are alive",
                 watchdog_period_.count());
  }

  loop_.run();

  if (!leaves_files_to_old_master()) {
    remove_pid_file(pid_file_, ::getpid());
    if (owns_control_path_) control_.remove_file(control_path_);
  }
  // An upgrade's new master that left its socket to this master, stopping too: nobody
  // listens there now.
  if (!owns_control_path_ && new_master_ <= 0) {
    remove_dead_socket(control_path_);
  }
  spdlog::log(exit_code_ == 0 ? spdlog::level::info : spdlog::level::err, "master exiting{}",
              exit_code_ == 0 ? "" : " with an error");
  return exit_code_;
}

// Read here, once: the workers get the verdict, and neither they nor a new binary (whose
// generations are numbered from 1 again) see the variables.
void Master::read_test_hooks() {
  ready_timeout_ = ready_timeout_from_environment();
  worker_fail_ = worker_fail_from_environment();
  scribbling_workers_ = number_from_environment(kScribbleStatsVariable);
  unready_generation_ = number_from_environment(kUnreadyGenerationVariable);
  check_no_socket_ = std::getenv(kCheckNoSocketVariable) != nullptr;
  ::unsetenv(kCheckNoSocketVariable);
  if (const char* v = std::getenv(kAdoptExitVariable)) adopt_exit_ = std::max(1, std::atoi(v));
  ::unsetenv(kAdoptExitVariable);
  if (const char* v = std::getenv(kAdoptPauseVariable)) adopt_pause_ms_ = std::max(0, std::atoi(v));
  ::unsetenv(kAdoptPauseVariable);
  new_master_unready_ = std::getenv(kNewMasterUnreadyVariable) != nullptr;
  ::unsetenv(kNewMasterUnreadyVariable);
  own_state_.take_test_hook();
}

// Before the first fork: the workers inherit the mappings (the health board is mapped per
// configuration, by new_health_board()).
bool Master::map_shared_zones() {
  if (zones_.mutex_shm.create(sizeof(event::AcceptMutexWord))) return false;
  zones_.mutex_word = new (zones_.mutex_shm.data()) event::AcceptMutexWord;
  if (zones_.counters_shm.create(sizeof(worker::CountersTable))) return false;
  zones_.counters = worker::CountersTable::create(zones_.counters_shm.data());
  zones_.client_limits = segments_.open_client_limits(upgraded_);
  if (zones_.client_limits == nullptr) return false;
  if (zones_.admin_shm.create_sealed(worker::ServerAdminTable::bytes(), "ferry-servers")) {
    return false;
  }
  zones_.admin = worker::ServerAdminTable::create(zones_.admin_shm.data());
  stats_ = worker::StatsTable::create(FERRY_VERSION, ::getpid(), ::time(nullptr));
  if (stats_ == nullptr) return false;
  if (const char* capacity = std::getenv(kStatsCapacityVariable)) {
    std::size_t proxies = 0;
    std::size_t servers = 0;
    if (std::sscanf(capacity, "%zu:%zu", &proxies, &servers) == 2) {
      stats_->set_capacity_for_tests(proxies, servers);
    }
    ::unsetenv(kStatsCapacityVariable);  // not for the workers, nor for a new binary
  }
  return true;
}

bool Master::open_signalfd() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : kSignals) sigaddset(&set, sig);
  // Blocked so that they queue on the signalfd instead of interrupting anything.
  if (::sigprocmask(SIG_BLOCK, &set, nullptr) == -1) {
    spdlog::critical("sigprocmask() failed: {}", event::last_error().message());
    return false;
  }
  signal_.fd.reset(::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
  if (!signal_.fd) {
    spdlog::critical("signalfd() failed: {}", event::last_error().message());
    return false;
  }
  signal_.data = this;
  signal_.read.handler = on_signal;
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &ignore, nullptr);
  return !loop_.add_event(signal_.read, event::EventKind::read);
}

bool Master::open_control_socket() {
  control_path_ = control_socket_path(config_->pid_file);
  return control_.open(control_path_);
}

void Master::on_signal(Event& ev) {
  auto& self = *static_cast<Master*>(static_cast<Connection*>(ev.data)->data);
  signalfd_siginfo info[16];
  for (;;) {
    const ssize_t n =
        event::retry_eintr([&] { return ::read(self.signal_.fd.get(), info, sizeof info); });
    if (n <= 0) return;
    for (std::size_t i = 0; i < static_cast<std::size_t>(n) / sizeof info[0]; ++i) {
      self.handle_signal(static_cast<int>(info[i].ssi_signo));
    }
  }
}

void Master::handle_signal(int sig) {
  switch (sig) {
    case SIGCHLD:
      reap();
      // Also the doorbell of a new master that hands the service back as it leaves.
      take_service_back_from_a_leaving_new_master();
      break;
    case SIGHUP:
      // Stopping is final: nothing may start workers again (nor tell systemd READY=1).
      if (stopping_) {
        spdlog::info("SIGHUP ignored: the master is stopping");
        break;
      }
      if (winched_) {
        // After WINCH (an upgrade being rolled back): bring the workers back as they were.
        spdlog::info("SIGHUP: restarting the workers with the running configuration");
        restart_winched_workers();
        break;
      }
      spdlog::info("SIGHUP: reloading {}", conf_file_);
      reload();
      break;
    case SIGQUIT: stop(true); break;
    case SIGTERM:
    case SIGINT: stop(false); break;
    case SIGUSR1: reopen(); break;
    case SIGWINCH: winch(); break;
    case SIGUSR2: (void)upgrade(); break;
    default: break;
  }
}

void Master::stop(bool graceful) {
  if (stopping_ && graceful) return;
  // First of all: a new master of our upgrade that stops from now on must not hand the
  // service back to a master that is leaving (it reads this word before it does).
  own_state_.publish(OldMasterState::stopping);
  spdlog::info("{}: {} stop", graceful ? "SIGQUIT" : "SIGTERM", graceful ? "graceful" : "fast");
  if (!stopping_) notify_stopping();
  stopping_ = true;
  // A pending reload must not come back after this: its timeout would re-bind what is closed
  // below and spawn workers, and its generation turning ready would send READY=1.
  cancel_pending_reload();
  // Before the quit, on the same channels: their sockets come once the other master answers.
  if (graceful) ask_peer_for_session_sockets();
  // Ours would wait for workers that will not come.
  if (peer_move_request_ != 0) answer_move_request();
  for (auto& w : workers_) {
    tell(w, graceful ? worker::Command::quit : worker::Command::terminate);
  }
  // Nothing new: the workers own the sockets until they exit.
  listeners_.close_all();
  control_.close();
  answer_reload_waiters(protocol::error_answer("ferry: the master is stopping\n"), true);
  // An upgrade's asker told this master to leave (its new master serves): nothing to add.
  answer_all(upgrade_clients_, protocol::kOk);
  if (workers_.empty()) {
    loop_.stop();
    return;
  }
  arm_kill_timer(graceful ? std::optional<Msec>{} : std::optional<Msec>{Msec{0}});
}

void Master::arm(Event& ev, Msec delay, event::EventHandler handler) {
  ev.data = this;
  ev.handler = handler;
  loop_.add_timer(ev, delay);
}

void Master::reopen() {
  spdlog::info("SIGUSR1: reopening logs");
  // A new master draining after a rollback has no pid file left for `-s reopen` to find.
  if (new_master_leaving_ && ::kill(new_master_, SIGUSR1) == -1) {
    spdlog::error("kill({}, USR1) to the leaving new master failed: {}", new_master_,
                  event::last_error().message());
  }
  std::string why;
  if (worker::apply_log_settings(config_->log, why)) {
    spdlog::error("cannot reopen the error log {}: {}", config_->log.path, why);
  }
  worker::set_log_role("master");
  // Created as root just now: the workers reopen them as their user.
  if (config_->user && ::geteuid() == 0) {
    const auto found = conf::look_up_user(*config_->user);
    if (const auto* why = std::get_if<std::string>(&found)) {
      spdlog::error("the logs stay root's: {}", *why);
    } else {
      give_logs_to(*config_, *config_->user, std::get<conf::UserIds>(found).uid);
    }
  }
  for (auto& w : workers_) tell(w, worker::Command::reopen);
}

int run_master(const std::string& conf_file, conf::Config config) {
  Master master(conf_file, std::move(config));
  return master.run();
}

}  // namespace ferry::master
