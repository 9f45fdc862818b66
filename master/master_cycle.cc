// The master cycle: a small event loop of its own over a signalfd, the workers' channels and the
// control socket. Workers are forked from it and never return to it.
#include "master/master_cycle.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <time.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <list>
#include <memory>
#include <new>
#include <optional>
#include <set>
#include <string_view>
#include <variant>
#include <vector>

#include <spdlog/spdlog.h>

#include "conf/loader.h"
#include "conf/user.h"
#include "event/accept_mutex.h"
#include "event/event_loop.h"
#include "event/shared_memory.h"
#include "event/thread_pool.h"
#include "ferry_version.h"
#include "master/control.h"
#include "master/control_server.h"
#include "master/inherited_fds.h"
#include "master/listeners.h"
#include "master/pid_file.h"
#include "master/process_title.h"
#include "master/service_notifier.h"
#include "master/upgrade_segments.h"
#include "master/upgrade_state.h"
#include "worker/channel.h"
#include "worker/logging.h"
#include "worker/proxy/client_limits.h"
#include "worker/stats/render.h"
#include "worker/stats/stats_table.h"
#include "worker/upstream/health_board.h"
#include "worker/worker_counters.h"
#include "worker/worker_cycle.h"

namespace ferry::master {
namespace {

using event::Connection;
using event::Event;
using event::Msec;
using event::UniqueFd;

// Old generations still draining after a reload; past this the oldest is stopped at once
// (HAProxy's mworker-max-reloads).
constexpr int kMaxDrainingGenerations = 3;
// How long new workers have to report "ready" before a reload is declared failed.
constexpr Msec kReadyTimeout{10'000};
// Overrides kReadyTimeout (milliseconds), for tests only: they wait out a failed reload quickly.
constexpr const char* kReadyTimeoutVariable = "FERRY_TEST_READY_TIMEOUT_MS";
// For tests only: "CODE:FIRST:COUNT" makes the workers the master starts as its FIRST-th to
// (FIRST+COUNT-1)-th (from 0, respawns and reloads included) exit with CODE at once, so that the
// respawn back-off and the rule for exit code 2 (kFatalExit) can be tested.
constexpr const char* kWorkerFailVariable = "FERRY_TEST_WORKER_FAIL";
// Test only: "N" makes the first N workers the master starts write garbage over every statistics
// word they can (what a worker gone wrong might do), to show that the master does not trust them.
constexpr const char* kScribbleStatsVariable = "FERRY_TEST_SCRIBBLE_STATS";
// Test only: "N" makes the workers of generation N (only) serve without ever reporting ready, as
// workers stuck in their start would (a reload then stays pending until its timeout).
constexpr const char* kUnreadyGenerationVariable = "FERRY_TEST_UNREADY_GENERATION";
// Test only: "PROXIES:SERVERS", how many names the statistics registry holds (at most
// kMaxProxies and kMaxServers), so that a test fills it with a few reloads.
constexpr const char* kStatsCapacityVariable = "FERRY_TEST_STATS_CAPACITY";
// Test only: set, the health checkers' socket() fails with EMFILE, as when a worker is out of
// descriptors.
constexpr const char* kCheckNoSocketVariable = "FERRY_TEST_HEALTH_CHECK_NO_SOCKET";
// After a worker has been told to stop: how long past its own bound before SIGKILL.
constexpr Msec kKillGrace{5'000};
// A worker that dies this soon after starting is respawned with a growing delay.
constexpr Msec kQuickDeath{1'000};
constexpr Msec kMaxBackoff{10'000};
// How often systemd's STATUS= line is refreshed (only sent when its text changed).
constexpr Msec kStatusInterval{5'000};

// The old master's pid file while a new binary takes over.
constexpr std::string_view kOldBinSuffix = ".oldbin";

const int kSignals[] = {SIGHUP, SIGQUIT, SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCHLD};

struct WorkerProcess {
  pid_t pid = -1;
  int slot = 0;
  int generation = 0;
  Connection channel;                                         // the master's end
  worker::WorkerCounters* counters = nullptr;                 // its entry in the shared table
  std::size_t limits_share = worker::ClientLimits::kNoShare;  // its share of per-client counts
  event::TimePoint started;
  bool ready = false;
  bool told_to_stop = false;
  class Master* master = nullptr;
};

// Which starts FERRY_TEST_WORKER_FAIL makes fail, and how.
struct WorkerFailHook {
  int code = 0;
  int first = 0;
  int count = 0;
  [[nodiscard]] bool applies(int start) const { return start >= first && start - first < count; }
};

struct RespawnTimer {
  Event ev;
  int slot = 0;
  int generation = 0;  // spawned only while it is still serving or pending
  int quick_deaths = 0;
  class Master* master = nullptr;
};

class Master {
 public:
  Master(std::string conf_file, conf::Config config)
      : conf_file_(std::move(conf_file)),
        config_(std::make_unique<conf::Config>(std::move(config))) {}

  int run() {
    set_process_title("ferry: master process " + original_command_line());
    worker::set_log_role("master");
    raise_nofile_limit(*config_);
    ready_timeout_ = ready_timeout_from_environment();
    worker_fail_ = worker_fail_from_environment();
    // Read here, once: the workers get the verdict, and neither they nor a new binary (whose
    // generations are numbered from 1 again) see the variables.
    scribbling_workers_ = number_from_environment(kScribbleStatsVariable);
    unready_generation_ = number_from_environment(kUnreadyGenerationVariable);
    check_no_socket_ = std::getenv(kCheckNoSocketVariable) != nullptr;
    ::unsetenv(kCheckNoSocketVariable);
    own_state_.take_test_hook();

    std::string why;
    // A new master of a binary upgrade gets its sockets (systemd's among them) from the old one.
    upgraded_ = listeners_.adopt_inherited();
    if (upgraded_) {
      upgrade_parent_ = ::getppid();
      if (!old_master_state_.adopt()) {
        spdlog::warn(
            "the old master shares no state page; stopping will hand the service back "
            "to it whenever it is still running");
      }
    } else {
      listeners_.adopt_activated();
    }
    notifier_ = ServiceNotifier(upgraded_);
    if (listeners_.apply(*config_, config_->worker_processes, why)) {
      spdlog::critical("{}", why);
      return 1;
    }
    listeners_.close_removed();
    listeners_.advise_migrate_req(*config_);
    if (shm_.create(sizeof(event::AcceptMutexWord))) return 1;
    mutex_word_ = new (shm_.data()) event::AcceptMutexWord;
    if (counters_shm_.create(sizeof(worker::CountersTable))) return 1;
    counters_ = worker::CountersTable::create(counters_shm_.data());
    client_limits_ = segments_.open_client_limits(upgraded_);
    if (client_limits_ == nullptr) return 1;
    stats_ = worker::StatsTable::create(FERRY_VERSION, ::getpid(), ::time(nullptr));
    if (stats_ == nullptr) return 1;
    if (const char* capacity = std::getenv(kStatsCapacityVariable)) {
      std::size_t proxies = 0;
      std::size_t servers = 0;
      if (std::sscanf(capacity, "%zu:%zu", &proxies, &servers) == 2) {
        stats_->set_capacity_for_tests(proxies, servers);
      }
      ::unsetenv(kStatsCapacityVariable);  // not for the workers, nor for a new binary
    }
    register_stats();
    // Before the first workers: a name known to both masters keeps one index.
    const bool inheriting = segments_.inherit_first(*stats_);
    if (!new_health_board()) return 1;

    if (loop_.init({.connections = 256, .epoll_events = 64})) return 1;
    if (!open_signalfd() || !open_control_socket()) return 1;
    if (inheriting) arm(inherit_timer_, kInheritInterval, on_inherit_timer);
    arm(share_sweep_timer_, kShareSweepInterval, on_share_sweep_timer);
    if (write_pid_file(config_->pid_file, ::getpid())) return 1;
    pid_file_ = config_->pid_file;

    spdlog::info("ferry {} master started, pid {}, {} worker(s)", FERRY_VERSION, ::getpid(),
                 config_->worker_processes);
    pending_generation_ = generation_ = last_generation_ = 1;
    stats_->set_generation(generation_);
    for (int slot = 0; slot < config_->worker_processes; ++slot) spawn(slot, generation_);
    arm(reload_timeout_, ready_timeout_, on_reload_timeout);
    if (notifier_.enabled()) arm(status_timer_, kStatusInterval, on_status_timer);
    if (auto period = notifier_.watchdog_period()) {
      watchdog_period_ = Msec(period->count());
      arm(watchdog_timer_, watchdog_period_, on_watchdog_timer);
      spdlog::info("systemd watchdog: pinging every {} ms while the workers are alive",
                   watchdog_period_.count());
    }

    loop_.run();

    remove_pid_file(pid_file_, ::getpid());
    if (owns_control_path_) ::unlink(control_path_.c_str());
    spdlog::log(exit_code_ == 0 ? spdlog::level::info : spdlog::level::err, "master exiting{}",
                exit_code_ == 0 ? "" : " with an error");
    return exit_code_;
  }

 private:
  // ---- setup -------------------------------------------------------------------------------

  bool open_signalfd() {
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

  bool open_control_socket() {
    control_path_ = control_socket_path(config_->pid_file);
    return control_.open(control_path_);
  }

  static Msec ready_timeout_from_environment() {
    const char* value = std::getenv(kReadyTimeoutVariable);
    if (value == nullptr) return kReadyTimeout;
    const long ms = std::strtol(value, nullptr, 10);
    ::unsetenv(kReadyTimeoutVariable);  // not for the workers, nor for a new binary
    return ms > 0 ? Msec{ms} : kReadyTimeout;
  }

  // A test hook's number (0 when unset or not a positive number), taken out of the environment.
  static int number_from_environment(const char* name) {
    const char* value = std::getenv(name);
    if (value == nullptr) return 0;
    const long n = std::strtol(value, nullptr, 10);
    ::unsetenv(name);
    return n > 0 && n <= INT_MAX ? static_cast<int>(n) : 0;
  }

  static WorkerFailHook worker_fail_from_environment() {
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

  static void raise_nofile_limit(const conf::Config& cfg) {
    if (!cfg.worker_rlimit_nofile) return;
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) == -1) return;
    rlim_t want = static_cast<rlim_t>(*cfg.worker_rlimit_nofile);
    if (want > lim.rlim_max) {
      spdlog::warn("worker_rlimit_nofile {} is above the hard limit {}; using {}", want,
                   lim.rlim_max, lim.rlim_max);
      want = lim.rlim_max;
    }
    lim.rlim_cur = want;
    if (::setrlimit(RLIMIT_NOFILE, &lim) == -1) {
      spdlog::error("setrlimit(RLIMIT_NOFILE, {}) failed: {}", want, event::last_error().message());
    }
  }

  // ---- workers -----------------------------------------------------------------------------

  // A worker that cannot be started (no fds, no processes left) is retried like one that died
  // at once: with a growing delay.
  void spawn(int slot, int generation) {
    // No fork while the reload thread runs: a lock it holds (the allocator's, the resolver's)
    // would stay held for ever in the child, which does not exec. The worker is started by its
    // slot's timer once the read is done (at most kLoadTimeout, unless a lookup hangs).
    if (load_) {
      RespawnTimer& t = respawn_timer(slot);
      t.generation = generation;
      loop_.add_timer(t.ev, kForkWait);
      return;
    }
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == -1) {
      spdlog::error("socketpair() for worker {} failed: {}", slot, event::last_error().message());
      schedule_respawn(slot, generation, Msec{0});
      return;
    }
    UniqueFd master_end(sv[0]);
    UniqueFd worker_end(sv[1]);
    worker::WorkerCounters* counters = counters_->take(counters_taken_);
    if (counters == nullptr) {
      spdlog::warn(
          "all {} statistics slots are taken: worker {} (generation {}) will not be "
          "counted, limited per client or shown in the status",
          worker::CountersTable::kEntries, slot, generation);
    } else {
      // Before the fork: its block is zeroed before it can count anything.
      stats_->worker_started(counters_->index_of(*counters), 0, generation, ::time(nullptr));
    }
    const pid_t self = ::getpid();
    // With the counters entry, so that one master's workers take at most half of the shares:
    // the other master of an upgrade always finds its own.
    const std::size_t share =
        counters != nullptr ? client_limits_->claim(self) : worker::ClientLimits::kNoShare;
    const pid_t pid = ::fork();
    if (pid == -1) {
      spdlog::error("fork() for worker {} failed: {}", slot, event::last_error().message());
      (void)client_limits_->give_back(share, self, self);
      if (counters != nullptr) {
        (void)stats_->fold(counters_->index_of(*counters));  // nothing counted: the slot is free
        counters_->release(*counters, counters_taken_);
      }
      schedule_respawn(slot, generation, Msec{0});
      return;
    }
    if (pid == 0) {
      master_end.reset();
      // The master names this worker the share's owner once fork() returns; so does the worker,
      // in case the master is killed in between. Too late if the other master of an upgrade saw
      // it gone and took the share back: then the worker counts without one.
      std::size_t mine = share;
      if (share != worker::ClientLimits::kNoShare &&
          !client_limits_->assign(share, self, ::getpid())) {
        spdlog::warn("worker {}: its per-client share was taken back (the master is gone)", slot);
        mine = worker::ClientLimits::kNoShare;
      }
      if (worker_fail_.applies(workers_started_)) {
        spdlog::warn("{}: worker start {} exits with code {}", kWorkerFailVariable,
                     workers_started_, worker_fail_.code);
        ::_exit(worker_fail_.code);
      }
      ::_exit(worker_main(slot, generation, worker_end.release(), counters, mine,
                          workers_started_ < scribbling_workers_));
    }
    ++workers_started_;
    (void)client_limits_->assign(share, self, pid);  // false: the child saw to it
    if (counters != nullptr) {
      counters->owner.store(pid);
      stats_->worker_forked(counters_->index_of(*counters), pid);
    }
    auto& w = workers_.emplace_back();
    w.counters = counters;
    w.limits_share = share;
    w.pid = pid;
    w.slot = slot;
    w.generation = generation;
    w.started = event::monotonic_now();
    w.master = this;
    w.channel.fd = std::move(master_end);
    w.channel.data = &w;
    w.channel.read.handler = on_channel;
    (void)loop_.add_event(w.channel.read, event::EventKind::read);
    spdlog::info("started worker {} (generation {}), pid {}", slot, generation, pid);
  }

  // Runs in the forked child: drop everything that is the master's, become a worker.
  int worker_main(int slot, int generation, int channel, worker::WorkerCounters* counters,
                  std::size_t limits_share, bool scribble) {
    loop_.abandon();
    // First of all: from here on the statistics registry is read-only to this process.
    if (!stats_->enter_worker()) return worker::kFatalExit;
    segments_.enter_worker();
    signal_.fd.reset();
    control_.drop();
    for (auto& w : workers_) w.channel.fd.reset();
    if (load_pool_) load_pool_->abandon();  // the master's reload thread is not in this process

    sigset_t none;
    sigemptyset(&none);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig : kSignals) ::sigaction(sig, &dfl, nullptr);
    struct sigaction stop_now {};
    stop_now.sa_handler = [](int) { worker::stop_worker(false); };
    ::sigaction(SIGTERM, &stop_now, nullptr);
    ::sigaction(SIGINT, &stop_now, nullptr);
    struct sigaction stop_gracefully {};
    stop_gracefully.sa_handler = [](int) { worker::stop_worker(true); };
    ::sigaction(SIGQUIT, &stop_gracefully, nullptr);
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    for (int sig : {SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH, SIGPIPE})
      ::sigaction(sig, &ignore, nullptr);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);

    // Only the master speaks to systemd (the unit allows any process of the service to).
    for (const char* name : {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}) ::unsetenv(name);
    set_process_title("ferry: worker process");
    worker::set_log_role("worker");
    const conf::Config& cfg = *config_;
    if (cfg.worker_cpu_affinity == conf::CpuAffinity::automatic) {
      const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
      if (cpus > 1) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(static_cast<int>(slot % cpus), &set);
        if (::sched_setaffinity(0, sizeof set, &set) == -1) {
          spdlog::warn("sched_setaffinity(cpu {}) failed: {}", slot % cpus,
                       event::last_error().message());
        }
      }
    }
    const bool switched = cfg.user && ::geteuid() == 0;
    if (switched) {
      // Looked up once: the logs go to the user the worker becomes.
      const auto found = conf::look_up_user(*cfg.user);
      if (const auto* why = std::get_if<std::string>(&found)) {
        spdlog::critical("{}", *why);
        return worker::kFatalExit;
      }
      give_logs_to(cfg, *cfg.user, std::get<conf::UserIds>(found).uid);
      if (!switch_user(*cfg.user, std::get<conf::UserIds>(found))) return worker::kFatalExit;
    }
    // A worker never executes anything: nothing it runs may gain privileges.
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1) {
      spdlog::critical("prctl(PR_SET_NO_NEW_PRIVS) failed: {}", event::last_error().message());
      return worker::kFatalExit;
    }

    const std::size_t stats_slot =
        counters != nullptr ? counters_->index_of(*counters) : worker::StatsTable::kNoSlot;
    if (scribble) {
      spdlog::warn("{}: {}", kScribbleStatsVariable, stats_->scribble(stats_slot));
    }

    worker::WorkerSettings settings;
    settings.config = &cfg;
    settings.listening =
        listeners_.keep_for_worker(slot, cfg.worker_processes, /*with_status=*/true);
    settings.accept_mutex = mutex_word_;
    settings.channel = channel;
    settings.counters = counters;
    settings.client_limits = client_limits_;
    settings.client_secret = &segments_.client_secret();
    settings.limits_share = limits_share;
    settings.stats = stats_.get();
    settings.stats_slot = stats_slot;
    settings.health_board = health_board_;
    // Worker 0 of the generation probes the servers; a respawned worker 0 takes over.
    settings.run_health_checks = slot == 0;
    settings.health_check_no_socket = check_no_socket_;
    settings.slot = slot;
    settings.generation = generation;
    settings.withhold_ready = generation == unready_generation_;
    settings.on_shutdown = [] { set_process_title("ferry: worker process is shutting down"); };
    // As before the master made itself undumpable (core dumps, ptrace for its own user), only
    // now that nothing of the master's is left in it (other workers' channels, listeners). A
    // worker that switched to `user` stays undumpable, as the kernel made it on the change of ids.
    if (!switched && ::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) == -1) {
      spdlog::warn("prctl(PR_SET_DUMPABLE, 1) failed: {}", event::last_error().message());
    }
    return worker::run_worker_cycle(settings);
  }

  // Runs before any thread of the worker exists: the bounding set and the ambient set are
  // per thread.
  static bool switch_user(const std::string& name, conf::UserIds ids) {
    const uid_t uid = ids.uid;
    const gid_t gid = ids.gid;
    // Emptied while root still may (CAP_SETPCAP): no file capability can give any back later.
    // Without CAP_SETPCAP (a root confined by its own bounding set) the rest stays: no_new_privs
    // already keeps file capabilities from applying, so that is a warning, not a refusal.
    for (int cap = 0, held; (held = ::prctl(PR_CAPBSET_READ, cap, 0, 0, 0)) >= 0; ++cap) {
      if (held == 1 && ::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == -1) {
        spdlog::warn("prctl(PR_CAPBSET_DROP, {}) failed: {}; the bounding set is kept", cap,
                     event::last_error().message());
        break;
      }
    }
    if (::setgid(gid) == -1 || ::initgroups(name.c_str(), gid) == -1 || ::setuid(uid) == -1 ||
        ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) == -1) {
      spdlog::critical("switching to user \"{}\" failed: {}", name, event::last_error().message());
      return false;
    }
    // A user that is root again (uid 0 named, or a kernel that kept the ids) is refused.
    if (uid != 0 && ::setuid(0) == 0) {
      spdlog::critical("switching to user \"{}\": root could be regained", name);
      return false;
    }
    return true;
  }

  // Root created or reopened the logs; the worker reopens them as `name` on USR1 (nginx chowns
  // them the same way). Their folders must let that user through.
  static void give_logs_to(const conf::Config& cfg, const std::string& name, uid_t uid) {
    std::set<std::string> paths;
    if (cfg.log.path != "stderr") paths.insert(cfg.log.path);
    for (const conf::Proxy& p : cfg.proxies) {
      if (p.access_log != "off") paths.insert(p.access_log);
    }
    for (const std::string& path : paths) {
      // Root chowns only a plain file it did not follow a link to: in a folder the user may
      // write, a link planted there would hand any file to the user (nginx's CVE-2016-1247).
      // A log that is a link is left to the worker to open as the user.
      const UniqueFd fd(::open(
          path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644));
      struct stat st {};
      if (!fd || ::fstat(fd.get(), &st) == -1 || !S_ISREG(st.st_mode) || st.st_nlink != 1 ||
          st.st_uid == uid) {
        continue;
      }
      if (::fchown(fd.get(), uid, static_cast<gid_t>(-1)) == -1) {
        spdlog::warn("chown({}, {}) failed: {}", path, name, event::last_error().message());
      }
    }
  }

  WorkerProcess* find(pid_t pid) {
    for (auto& w : workers_) {
      if (w.pid == pid) return &w;
    }
    return nullptr;
  }

  void tell(WorkerProcess& w, worker::Command cmd) {
    if (cmd != worker::Command::reopen) w.told_to_stop = true;
    if (!w.channel.fd || !worker::channel_send(w.channel.fd.get(), static_cast<char>(cmd))) {
      // No channel (or it is full): a signal says the same.
      ::kill(w.pid, cmd == worker::Command::quit        ? SIGQUIT
                    : cmd == worker::Command::terminate ? SIGTERM
                                                        : SIGUSR1);
    }
  }

  static void on_channel(Event& ev) {
    auto& c = *static_cast<Connection*>(ev.data);
    auto& w = *static_cast<WorkerProcess*>(c.data);
    char buf[16];
    for (;;) {
      const ssize_t n = event::retry_eintr([&] { return ::read(c.fd.get(), buf, sizeof buf); });
      if (n > 0) {
        for (ssize_t i = 0; i < n; ++i) {
          if (buf[i] == static_cast<char>(worker::Report::ready)) w.master->on_worker_ready(w);
        }
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        // The worker is exiting; SIGCHLD will tell how.
        (void)w.master->loop_.del_event(c.read, event::EventKind::read, false);
        c.fd.reset();
      }
      return;
    }
  }

  void on_worker_ready(WorkerProcess& w) {
    w.ready = true;
    if (w.generation != pending_generation_ || stopping_) return;
    for (const auto& other : workers_) {
      if (other.generation == pending_generation_ && !other.ready && !other.told_to_stop) return;
    }
    generation_ready();
  }

  // Every worker of the pending generation serves: retire the older ones.
  void generation_ready() {
    loop_.del_timer(reload_timeout_);
    const int gen = pending_generation_;
    pending_generation_ = 0;
    previous_.reset();  // no way back now
    for (auto& w : workers_) {
      if (w.generation < gen && !w.told_to_stop) tell(w, worker::Command::quit);
    }
    cap_draining_generations();
    listeners_.close_removed();
    move_pid_file();
    if (gen == 1) {
      spdlog::info("all {} worker(s) serving", config_->worker_processes);
    } else {
      spdlog::info("reload complete: generation {} serving", gen);
      last_reload_ = "last reload " + clock_time() + " ok";
      stats_->reload_succeeded(::time(nullptr));
    }
    served_ = true;
    // Before the askers get their answer: by the time `ferry -s reload` (ExecReload=) exits,
    // systemd has seen the reload end.
    if (in_charge()) notifier_.ready(status_text());
    answer_reload_waiters("ok\n");
    run_queued_reload();
  }

  // The configuration now serving names another pid_file: the pid file and the control socket
  // next to it move there (nginx moves its pid file too), so that `ferry -s` given the new
  // configuration finds this master. Not while a new binary holds the usual names.
  void move_pid_file() {
    if (config_->pid_file == pid_file_ || new_master_ > 0 || stopping_) return;
    // Another spelling of the same place ("./ferry.pid", a link to the folder, "x" and "x.pid"
    // for the socket) keeps the file or the socket that is there: writing the new and removing
    // the old would remove the one just written.
    const bool same_pid_file = same_file(config_->pid_file, pid_file_);
    const std::string old_pid_file = pid_file_;
    const std::string old_control_path = control_path_;
    if (!same_pid_file && write_pid_file(config_->pid_file, ::getpid())) {
      spdlog::error("pid_file changed to {} but it cannot be written; the master stays at {}",
                    config_->pid_file, old_pid_file);
      return;
    }
    const std::string new_control_path = control_socket_path(config_->pid_file);
    if (same_file(new_control_path, old_control_path)) {
      control_path_ = new_control_path;
    } else {
      if (!control_.open(new_control_path)) {
        // Both stay where `ferry -s` with the old configuration finds them.
        spdlog::error(
            "pid_file changed to {} but the control socket cannot move; the master stays "
            "at {}",
            config_->pid_file, old_pid_file);
        if (!same_pid_file) remove_pid_file(config_->pid_file, ::getpid());
        return;
      }
      control_path_ = new_control_path;
      if (owns_control_path_ && ::unlink(old_control_path.c_str()) == -1) {
        spdlog::warn("unlink({}) failed: {}", old_control_path, event::last_error().message());
      }
      owns_control_path_ = true;
    }
    if (!same_pid_file) remove_pid_file(old_pid_file, ::getpid());
    pid_file_ = config_->pid_file;
    spdlog::info("pid file moved from {} to {}; control socket {}", old_pid_file, pid_file_,
                 control_path_);
  }

  void cap_draining_generations() {
    std::set<int> draining;
    for (const auto& w : workers_) {
      if (w.generation != generation_) draining.insert(w.generation);
    }
    while (static_cast<int>(draining.size()) > kMaxDrainingGenerations) {
      const int oldest = *draining.begin();
      spdlog::warn("more than {} generations draining: stopping generation {} now",
                   kMaxDrainingGenerations, oldest);
      for (auto& w : workers_) {
        if (w.generation == oldest) tell(w, worker::Command::terminate);
      }
      draining.erase(draining.begin());
    }
    arm_kill_timer();
  }

  // ---- signals -----------------------------------------------------------------------------

  static void on_signal(Event& ev) {
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

  void handle_signal(int sig) {
    switch (sig) {
      case SIGCHLD: reap(); break;
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
      case SIGWINCH:
        // Only the old master of an upgrade whose new master runs may do without workers: a
        // terminal resize sends WINCH to a ferry in the foreground, which would stop serving
        // while it keeps its listeners (nginx obeys WINCH only when daemonized).
        if (new_master_ <= 0) {
          spdlog::warn(
              "SIGWINCH ignored: no binary upgrade is under way (WINCH stops the workers of "
              "an old master only while the new master of its upgrade runs)");
          break;
        }
        spdlog::info("SIGWINCH: stopping the workers gracefully, the master stays");
        winched_ = true;
        own_state_.publish(OldMasterState::winched);
        // The pending generation stops with the others: its timeout must not bring the old
        // one back. The configuration that served is the running one again.
        if (pending_generation_ != 0) {
          // Only a reload fails: the first workers, or those a HUP after WINCH brought back,
          // had nothing else serving.
          const bool reloading = previous_.has_value();
          cancel_pending_reload();
          restore_serving(/*respawn=*/false);
          if (reloading) reload_failed("cancelled by SIGWINCH");
        }
        // So is a file being read: its end must not start workers the operator just stopped.
        cancel_pending_read();
        answer_reload_waiters("error\nferry: the reload was cancelled by SIGWINCH\n", true);
        for (auto& w : workers_) {
          if (!w.told_to_stop) tell(w, worker::Command::quit);
        }
        arm_kill_timer();
        break;
      case SIGUSR2: (void)upgrade(); break;
      default: break;
    }
  }

  // After WINCH: a new generation from the running configuration, ready once it serves.
  void restart_winched_workers() {
    winched_ = false;
    own_state_.publish(OldMasterState::serving);
    pending_generation_ = generation_ = ++last_generation_;
    stats_->set_generation(generation_);
    for (int slot = 0; slot < config_->worker_processes; ++slot) spawn(slot, generation_);
    arm(reload_timeout_, ready_timeout_, on_reload_timeout);
  }

  void reap() {
    for (;;) {
      int status = 0;
      const pid_t pid = ::waitpid(-1, &status, WNOHANG);
      if (pid <= 0) break;
      if (pid == new_master_) {
        upgrade_ended(status);
        continue;
      }
      WorkerProcess* w = find(pid);
      if (w == nullptr) continue;
      mutex().force_unlock(pid);  // a lock held by the dead must not stall the others
      const bool expected = w->told_to_stop || stopping_;
      if (WIFSIGNALED(status)) {
        spdlog::log(expected ? spdlog::level::info : spdlog::level::warn,
                    "worker {} (pid {}) killed by signal {} (SIG{})", w->slot, pid,
                    WTERMSIG(status), sigabbrev_np(WTERMSIG(status)));
      } else {
        const int code = WEXITSTATUS(status);
        spdlog::log(code == 0 && expected ? spdlog::level::info : spdlog::level::warn,
                    "worker {} (pid {}) exited with code {}", w->slot, pid, code);
      }
      const int slot = w->slot;
      const int generation = w->generation;
      const Msec lived = event::monotonic_now() - w->started;
      // Killed from outside (SIGKILL: an operator, the OOM killer) after it reported serving, a
      // worker did not fail to start: it is replaced at once, however young it was.
      const bool killed_serving = w->ready && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
      const bool fatal = WIFEXITED(status) && WEXITSTATUS(status) == worker::kFatalExit;
      if (w->channel.fd) (void)loop_.del_event(w->channel.read, event::EventKind::read, false);
      w->channel.fd.reset();
      (void)client_limits_->give_back(w->limits_share, pid, ::getpid());
      w->limits_share = worker::ClientLimits::kNoShare;
      if (w->counters != nullptr) {
        recover_server_conns(generation, counters_->index_of(*w->counters));
        if (const std::size_t wrong = stats_->fold(counters_->index_of(*w->counters))) {
          spdlog::warn(
              "worker {} (pid {}) left {} statistics counter(s) that cannot be true: its counts "
              "are dropped",
              w->slot, pid, wrong);
        }
        retired_accepted_ += counters_->release(*w->counters, counters_taken_);
      }
      w->counters = nullptr;
      // Not freed yet: a report for its channel may still be waiting later in this epoll batch
      // (a closed fd marks it stale). Freed once the batch is done.
      auto entry = std::find_if(workers_.begin(), workers_.end(),
                                [pid](const WorkerProcess& p) { return p.pid == pid; });
      graveyard_.splice(graveyard_.end(), workers_, entry);
      bury_.data = this;
      bury_.handler = [](Event& ev) { static_cast<Master*>(ev.data)->graveyard_.clear(); };
      loop_.post(bury_);

      if (!expected && !winched_ &&
          (generation == generation_ || generation == pending_generation_)) {
        if (fatal && !served_) {
          // The very first workers cannot work: nothing serves, so fail now (a supervisor
          // sees it at once) rather than wait out the start-up timeout.
          spdlog::critical(
              "worker {} cannot work (exit code {}) and no worker ever served: exiting", slot,
              worker::kFatalExit);
          exit_code_ = 1;
          stop(false);
        } else if (fatal) {
          spdlog::error("worker {} cannot work (exit code {}): not respawning it", slot,
                        worker::kFatalExit);
        } else {
          schedule_respawn(slot, generation, killed_serving ? kQuickDeath : lived);
        }
      }
    }
    if (stopping_ && workers_.empty()) loop_.stop();
    if (pending_generation_ != 0) {
      // A new worker that died before reporting may have been the last one missing.
      bool all_ready = true;
      bool any = false;
      for (const auto& w : workers_) {
        if (w.generation != pending_generation_) continue;
        any = true;
        all_ready = all_ready && w.ready;
      }
      if (any && all_ready) generation_ready();
    }
  }

  void schedule_respawn(int slot, int generation, Msec lived) {
    RespawnTimer& t = respawn_timer(slot);
    t.generation = generation;
    if (lived >= kQuickDeath) {
      t.quick_deaths = 0;
      spawn(slot, generation);
      return;
    }
    ++t.quick_deaths;
    const Msec delay = std::min(kMaxBackoff, Msec{100 << std::min(t.quick_deaths - 1, 7)});
    spdlog::warn("worker {} died {} ms after starting; respawning in {} ms", slot, lived.count(),
                 delay.count());
    loop_.add_timer(t.ev, delay);
  }

  // A generation given up: its workers that died are not replaced.
  void drop_respawns(int generation) {
    for (auto& t : respawn_timers_) {
      if (t->generation == generation) loop_.del_timer(t->ev);
    }
  }

  RespawnTimer& respawn_timer(int slot) {
    for (auto& t : respawn_timers_) {
      if (t->slot == slot) return *t;
    }
    auto t = std::make_unique<RespawnTimer>();
    t->slot = slot;
    t->master = this;
    t->ev.data = t.get();
    t->ev.handler = [](Event& ev) {
      auto& timer = *static_cast<RespawnTimer*>(ev.data);
      Master& m = *timer.master;
      // A generation abandoned meanwhile (its reload timed out) is not brought back.
      if (m.stopping_ || m.winched_ || timer.slot >= m.config_->worker_processes ||
          (timer.generation != m.generation_ && timer.generation != m.pending_generation_)) {
        return;
      }
      m.spawn(timer.slot, timer.generation);
    };
    respawn_timers_.push_back(std::move(t));
    return *respawn_timers_.back();
  }

  event::AcceptMutex mutex() { return event::AcceptMutex(*mutex_word_, ::getpid()); }

  void stop(bool graceful) {
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
    for (auto& w : workers_) {
      tell(w, graceful ? worker::Command::quit : worker::Command::terminate);
    }
    // Nothing new: the workers own the sockets until they exit.
    listeners_.close_all();
    control_.close();
    answer_reload_waiters("error\nferry: the master is stopping\n", true);
    // An upgrade's asker told this master to leave (its new master serves): nothing to add.
    answer_all(upgrade_clients_, "ok\n");
    if (workers_.empty()) {
      loop_.stop();
      return;
    }
    arm_kill_timer(graceful ? std::optional<Msec>{} : std::optional<Msec>{Msec{0}});
  }

  // SIGKILL for workers told to stop that overstay worker_shutdown_timeout (plus a grace).
  void arm_kill_timer(std::optional<Msec> bound = std::nullopt) {
    const Msec timeout = bound.value_or(shutdown_bound());
    if (!bound && timeout.count() == 0) return;  // "0": wait for every connection
    arm(kill_timer_, timeout + kKillGrace, [](Event& ev) {
      auto& m = *static_cast<Master*>(ev.data);
      for (auto& w : m.workers_) {
        if (w.told_to_stop) {
          spdlog::warn("worker {} (pid {}) did not exit in time: SIGKILL", w.slot, w.pid);
          ::kill(w.pid, SIGKILL);
        }
      }
    });
  }

  // The longest worker_shutdown_timeout of the configurations whose workers may be running (a
  // cancelled reload's stays the master's until the serving one is restored): each worker
  // closes its connections at its own; "0" (no bound) wins.
  Msec shutdown_bound() const {
    const Msec mine = config_->worker_shutdown_timeout;
    if (!previous_) return mine;
    const Msec theirs = previous_->config->worker_shutdown_timeout;
    return mine.count() == 0 || theirs.count() == 0 ? Msec{0} : std::max(mine, theirs);
  }

  void arm(Event& ev, Msec delay, event::EventHandler handler) {
    ev.data = this;
    ev.handler = handler;
    loop_.add_timer(ev, delay);
  }

  void reopen() {
    spdlog::info("SIGUSR1: reopening logs");
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

  // Before the configuration's workers are forked: they look their names up at start.
  void register_stats() {
    if (const std::size_t missed = stats_->register_config(*config_)) {
      spdlog::warn(
          "{} proxy or server name(s) do not fit the statistics (too long or too many): "
          "not counted",
          missed);
    }
  }

  // A reaped worker's sessions to max_conns-limited servers ended with it: out of the count of
  // its generation (the serving or the previous one; an older one takes no new sessions).
  void recover_server_conns(int generation, std::size_t share) noexcept {
    if (generation == generation_ && health_board_ != nullptr) {
      health_board_->recover(health_servers_, share);
    } else if (previous_ && generation == previous_->generation &&
               previous_->health_board != nullptr) {
      previous_->health_board->recover(previous_->health_servers, share);
    }
  }

  bool new_health_board() {
    event::SharedMemory shm;
    if (shm.create(worker::HealthBoard::bytes_for(*config_))) {
      health_board_ = nullptr;
      return false;
    }
    health_board_ = worker::HealthBoard::create(shm.data(), *config_);
    health_servers_ = worker::HealthBoard::servers_of(*config_);
    health_shm_ = std::move(shm);
    return true;
  }

  // ---- binary upgrade ----------------------------------------------------------------------

  // USR2: start the binary found at our path as a new master that inherits the listening
  // sockets; both run until the operator QUITs one of them.
  // Returns why it could not start the new master ("" when it did).
  std::string upgrade() {
    if (stopping_) {
      spdlog::warn("SIGUSR2 ignored: the master is stopping");
      return "the master is stopping";
    }
    if (new_master_ > 0) {
      spdlog::warn("SIGUSR2: an upgrade is already under way (new master pid {})", new_master_);
      return "an upgrade is already under way (new master pid " + std::to_string(new_master_) + ")";
    }
    // nginx ignores USR2 then too: a third master would take over from one that is leaving.
    if (old_master_running()) {
      spdlog::warn("SIGUSR2 ignored: the old master (pid {}) of the last upgrade still runs",
                   upgrade_parent_);
      return "the old master (pid " + std::to_string(upgrade_parent_) +
             ") of the last upgrade still runs; stop it first";
    }
    if (load_) {  // its thread must not be running at the fork (see spawn())
      spdlog::warn("SIGUSR2 ignored: {} is being read for a reload; try again", conf_file_);
      return "a reload is reading " + conf_file_ + "; try again once it is done";
    }
    // From where the pid file is (a pid_file move may have failed), not where it should be.
    const std::string old_pid_file = pid_file_ + std::string(kOldBinSuffix);
    if (::rename(pid_file_.c_str(), old_pid_file.c_str()) == -1) {
      const std::string why = "rename(" + pid_file_ + ", " + old_pid_file +
                              ") failed: " + event::last_error().message();
      spdlog::error("SIGUSR2: {}", why);
      return why;
    }
    // A new page per upgrade; without one the new master falls back to "hand the service back
    // while the old master runs", so the upgrade goes on.
    (void)own_state_.create(winched_ ? OldMasterState::winched : OldMasterState::serving);
    const pid_t pid = ::fork();
    if (pid == -1) {
      const std::string why = "fork() failed: " + event::last_error().message();
      spdlog::error("SIGUSR2: {}", why);
      ::rename(old_pid_file.c_str(), pid_file_.c_str());
      return why;
    }
    if (pid == 0) {
      // The new master gets the listening sockets and nothing else of ours, even an fd opened
      // without O_CLOEXEC (ferry's own all have it; security_test checks) or inherited so.
      close_on_exec_from(3);
      const std::string fds = listeners_.prepare_for_exec();
      ::setenv(ListenerSet::kInheritVariable, fds.c_str(), 1);
      own_state_.pass_to_exec();
      segments_.pass_to_exec(*stats_);
      // Last before exec: whatever is passed above (and only that) is kept by the new master.
      name_passed_fds();
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      std::vector<char*> argv;
      for (const auto& a : original_arguments()) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(binary_path().c_str(), argv.data());
      spdlog::critical("SIGUSR2: execv({}) failed: {}", binary_path(),
                       event::last_error().message());
      ::_exit(worker::kFatalExit);
    }
    // systemd follows the new master from now on; it sends READY and STATUS itself.
    if (in_charge()) {
      notifier_.main_pid(pid, "binary upgrade: new master pid " + std::to_string(pid) +
                                  " starting; old master pid " + std::to_string(::getpid()));
    }
    own_state_.drop_fd();
    new_master_ = pid;
    pid_file_ = old_pid_file;
    owns_control_path_ = false;  // the new master binds it
    spdlog::info("SIGUSR2: started new master {} (pid {}); pid file is now {}", binary_path(), pid,
                 pid_file_);
    return "";
  }

  bool old_master_running() const {
    return upgraded_ && upgrade_parent_ > 1 && ::getppid() == upgrade_parent_;
  }

  // The old master's statistics are taken in every second until it has exited, then for good.
  static void on_inherit_timer(Event& ev) {
    auto& m = *static_cast<Master*>(ev.data);
    if (m.segments_.inherit_more(*m.stats_, !m.old_master_running())) {
      m.loop_.add_timer(m.inherit_timer_, kInheritInterval);
    }
  }

  // Workers of a master killed during an upgrade drain on as orphans, their per-client shares
  // still theirs; once they are gone (reaped by init), their counts are taken back out.
  static void on_share_sweep_timer(Event& ev) {
    auto& m = *static_cast<Master*>(ev.data);
    (void)m.client_limits_->sweep(::getpid());
    m.loop_.add_timer(m.share_sweep_timer_, kShareSweepInterval);
  }

  // Marks every fd from `first` up close-on-exec: close_range() where the kernel has it (5.11),
  // else one by one from /proc/self/fd.
  static void close_on_exec_from(int first) {
    if (::close_range(static_cast<unsigned>(first), ~0U, CLOSE_RANGE_CLOEXEC) == 0) return;
    if (errno != ENOSYS && errno != EINVAL) {
      spdlog::error("close_range(CLOSE_RANGE_CLOEXEC) failed: {}", event::last_error().message());
    }
    DIR* dir = ::opendir("/proc/self/fd");
    if (dir == nullptr) {
      spdlog::error("opendir(/proc/self/fd) failed: {}", event::last_error().message());
      return;
    }
    while (const dirent* entry = ::readdir(dir)) {
      const int fd = std::atoi(entry->d_name);
      if (fd < first || fd == ::dirfd(dir)) continue;
      if (::fcntl(fd, F_SETFD, FD_CLOEXEC) == -1) {
        spdlog::error("fcntl({}, F_SETFD) failed: {}", fd, event::last_error().message());
      }
    }
    ::closedir(dir);
  }

  // The new master exited: the upgrade was rolled back (or failed). Take the pid file and the
  // control socket back.
  void upgrade_ended(int status) {
    spdlog::log(stopping_ ? spdlog::level::info : spdlog::level::warn,
                "new master (pid {}) exited ({}); this master is in charge again", new_master_,
                WIFSIGNALED(status) ? std::string("signal ") + sigabbrev_np(WTERMSIG(status))
                                    : "code " + std::to_string(WEXITSTATUS(status)));
    new_master_ = -1;
    answer_all(upgrade_clients_,
               "error\nferry: the new master exited (" +
                   (WIFSIGNALED(status) ? std::string("signal ") + sigabbrev_np(WTERMSIG(status))
                                        : "code " + std::to_string(WEXITSTATUS(status))) +
                   "); this master stays in charge\n");
    const std::string back = pid_file_.substr(0, pid_file_.size() - kOldBinSuffix.size());
    if (::rename(pid_file_.c_str(), back.c_str()) == -1) {
      spdlog::error("rename({}, {}) failed: {}", pid_file_, back, event::last_error().message());
    } else {
      pid_file_ = back;
    }
    if (!stopping_ && control_.is_open()) {
      if (open_control_socket()) owns_control_path_ = true;
    }
    if (stopping_) return;
    // Normally the new master handed the service back already (MAINPID=) before exiting.
    notifier_.main_pid(::getpid(), status_text());
    if (winched_) {
      // Nothing serves (nginx restarts its workers then too): READY=1 once they do.
      spdlog::warn("this master's workers were stopped by SIGWINCH: starting them again");
      restart_winched_workers();
      return;
    }
    notifier_.ready(status_text());
  }

  // ---- reload ------------------------------------------------------------------------------

  void reload() {
    if (stopping_) return;
    if (pending_generation_ != 0) {
      reload_again_ = true;  // once the pending generation serves
      return;
    }
    if (load_) {
      reload_again_ = true;  // once the file being read is done with
      return;
    }
    if (in_charge()) notifier_.reloading("reloading " + conf_file_);
    // The file is read, and its host names resolved, on a thread of its own: a slow DNS server
    // must stall neither signals, the control socket nor the watchdog. The thread lives for
    // one read and is joined as soon as it is done (on_loaded), before any worker is forked:
    // a fork while another thread holds a lock (the allocator's, the resolver's) leaves the
    // child that lock held for ever. With the thread started at the master's start, a worker
    // forked during the thread's own start-up hung on the sanitizer allocator's lock.
    if (start_load_thread()) {
      load_ = std::make_unique<PendingLoad>();
      load_->file = conf_file_;
      load_->task.ctx = load_.get();
      load_->task.work = [](event::ThreadTask& t) {
        auto& l = *static_cast<PendingLoad*>(t.ctx);
        l.result = conf::load_file(l.file);
      };
      load_->task.event.data = this;
      load_->task.event.handler = on_loaded;
      if (!load_pool_->post(load_->task)) {
        arm(load_timeout_, kLoadTimeout, on_load_timeout);
        return;
      }
      load_.reset();
      load_pool_.reset();  // joined: no thread at the forks below
    }
    finish_reload(conf::load_file(conf_file_));
  }

  // A new thread for one read; false (logged) when none can start: the file is read inline.
  bool start_load_thread() {
    // The last read's pool (shut down) is kept one more read: this may run inside its own
    // completion callback (on_loaded -> run_queued_reload -> reload).
    spent_pool_ = std::move(load_pool_);
    load_pool_ = std::make_unique<event::ThreadPool>();
    if (!load_pool_->init(loop_, "ferry-load", 1, 1)) return true;
    spdlog::warn("no thread to read {} on: reading it on the master's loop", conf_file_);
    load_pool_.reset();
    return false;
  }

  // The configuration was read (or given up on after kLoadTimeout).
  static void on_loaded(Event& ev) {
    auto& m = *static_cast<Master*>(ev.data);
    const std::unique_ptr<PendingLoad> load = std::move(m.load_);
    m.loop_.del_timer(m.load_timeout_);
    // Its task done, the thread only has to see the stop: the join is immediate. (The pool
    // itself is replaced at the next read: this runs inside its completion callback.)
    m.load_pool_->shutdown();
    if (load->abandoned || m.stopping_) {
      spdlog::info("reading {} ended after it was given up; its result is dropped", load->file);
      m.run_queued_reload();
      return;
    }
    m.finish_reload(std::move(load->result));
  }

  static void on_load_timeout(Event& ev) {
    auto& m = *static_cast<Master*>(ev.data);
    if (!m.load_ || m.stopping_) return;
    m.load_->abandoned = true;  // its thread still owns it until the lookup returns
    const std::string why = "reading " + m.conf_file_ + " took longer than " +
                            std::to_string(kLoadTimeout.count() / 1000) +
                            " s (a host name's DNS server does not answer?)";
    spdlog::error("reload rejected: {}; keeping the running configuration", why);
    m.reload_failed(why);
    m.answer_reload_waiters("error\n" + why + "\n");
  }

  // WINCH: the file being read is given up (its thread owns it until the lookup returns), and a
  // reload queued behind it too.
  void cancel_pending_read() {
    if (!load_) return;
    reload_again_ = false;
    if (load_->abandoned) return;
    load_->abandoned = true;
    loop_.del_timer(load_timeout_);
    reload_failed("cancelled by SIGWINCH");
  }

  void finish_reload(conf::LoadResult result) {
    if (!result.config) {
      std::string text;
      for (const auto& e : result.errors) {
        spdlog::error("{}", e.to_string());
        text += e.to_string() + "\n";
      }
      spdlog::error("reload rejected: {} has {} error(s); keeping the running configuration",
                    conf_file_, result.errors.size());
      reload_failed(result.errors.empty() ? "invalid configuration"
                                          : result.errors.front().to_string());
      answer_reload_waiters("error\n" + text);
      run_queued_reload();  // one asked for while this file was read may find it fixed
      return;
    }
    for (const auto& w : result.warnings) spdlog::warn("{}", w.to_string());
    auto next = std::make_unique<conf::Config>(std::move(*result.config));
    std::string why;
    if (listeners_.apply(*next, next->worker_processes, why)) {
      spdlog::error("reload rejected: {}; keeping the running configuration", why);
      reload_failed(why);
      answer_reload_waiters("error\n" + why + "\n");
      run_queued_reload();
      return;
    }
    listeners_.advise_migrate_req(*next);
    if (worker::apply_log_settings(next->log, why)) {
      spdlog::error("cannot open the error log {}: {}; keeping the previous log", next->log.path,
                    why);
    }
    worker::set_log_role("master");
    raise_nofile_limit(*next);
    // Kept until the new generation serves: if it never does, the old one is the one serving.
    previous_ = Serving{std::move(config_), generation_, std::move(health_shm_), health_board_,
                        health_servers_};
    config_ = std::move(next);
    register_stats();
    winched_ = false;
    // The new generation gets a board laid out for the new configuration; the old workers keep
    // their mapping of the old one.
    if (!new_health_board())
      spdlog::error("health checks of generation {} are off", last_generation_ + 1);

    pending_generation_ = generation_ = ++last_generation_;
    stats_->set_generation(generation_);
    for (int slot = 0; slot < config_->worker_processes; ++slot) spawn(slot, generation_);
    arm(reload_timeout_, ready_timeout_, on_reload_timeout);
  }

  // The pending generation was given up: the one still serving is the master's again, with its
  // configuration (respawns, STATUS= and the watchdog count its workers), its listeners and its
  // health board.
  void restore_serving(bool respawn = true) {
    if (!previous_) return;
    config_ = std::move(previous_->config);
    generation_ = previous_->generation;
    health_shm_ = std::move(previous_->health_shm);
    health_board_ = previous_->health_board;
    health_servers_ = previous_->health_servers;
    previous_.reset();
    register_stats();  // its servers are the configured ones again
    stats_->set_generation(generation_);
    std::string why;
    // Every address of the old configuration is still open (removed ones are only closed once
    // a generation serves), so this reopens nothing; what the rejected one opened is closed.
    if (listeners_.apply(*config_, config_->worker_processes, why)) {
      spdlog::error("restoring the listeners of generation {} failed: {}", generation_, why);
    } else {
      listeners_.close_removed();
    }
    if (worker::apply_log_settings(config_->log, why)) {
      spdlog::error("cannot reopen the error log {}: {}", config_->log.path, why);
    }
    worker::set_log_role("master");
    // Its workers that died while the reload was pending were not replaced then.
    for (int slot = 0; respawn && slot < config_->worker_processes; ++slot) {
      const bool live = std::any_of(workers_.begin(), workers_.end(), [&](const auto& w) {
        return w.slot == slot && w.generation == generation_ && !w.told_to_stop;
      });
      if (!live) spawn(slot, generation_);
    }
  }

  // Stopping (or WINCH): the pending generation, its timeout and a reload queued behind it are
  // given up. Its workers are told to stop by the caller.
  void cancel_pending_reload() {
    loop_.del_timer(reload_timeout_);
    drop_respawns(pending_generation_);
    pending_generation_ = 0;
    reload_again_ = false;
  }

  static void on_reload_timeout(Event& ev) {
    auto& m = *static_cast<Master*>(ev.data);
    if (m.pending_generation_ == 0) return;
    spdlog::error(
        "generation {} did not report ready within {} ms; stopping it, the previous "
        "workers keep serving",
        m.pending_generation_, m.ready_timeout_.count());
    for (auto& w : m.workers_) {
      if (w.generation == m.pending_generation_) m.tell(w, worker::Command::terminate);
    }
    m.drop_respawns(m.pending_generation_);
    m.pending_generation_ = 0;
    m.restore_serving();
    if (!m.served_) {
      // Nothing to fall back on: fail, so that a supervisor sees it and can restart us.
      spdlog::critical("the workers did not start; exiting");
      m.exit_code_ = 1;
      m.stop(false);
      return;
    }
    m.reload_failed("the new workers did not start in time");
    m.answer_reload_waiters("error\nferry: the new workers did not start in time\n");
    m.run_queued_reload();
  }

  // ---- systemd -----------------------------------------------------------------------------

  // This master speaks for the service unless a binary upgrade handed it to a new master.
  [[nodiscard]] bool in_charge() const noexcept { return new_master_ <= 0; }

  void reload_failed(const std::string& first_error) {
    last_reload_ =
        "last reload " + clock_time() + " FAILED: " + first_error + " (running configuration kept)";
    stats_->reload_failed(first_error, ::time(nullptr));
    // READY=1 also after a rejected reload: systemd must not wait in "reloading".
    if (in_charge()) notifier_.ready(status_text());
  }

  void notify_stopping() {
    if (!in_charge()) return;  // the new master of the upgrade is the service now
    // The old master of our upgrade may still run: rolled back to (HUP brought its workers back,
    // or it was never told to leave), it is the service again; told to QUIT and draining its
    // last connections, it is leaving too, and naming it would leave systemd following a
    // process on its way out. Only the old master knows which: it says so in the shared page.
    if (old_master_running()) {
      const OldMasterState old = old_master_state_.peer();
      if (old != OldMasterState::stopping) {
        spdlog::info("old master (pid {}) is {}: handing the service back to it", upgrade_parent_,
                     to_string(old));
        notifier_.main_pid(upgrade_parent_, "binary upgrade rolled back: master pid " +
                                                std::to_string(upgrade_parent_) + " in charge");
        return;
      }
      spdlog::info("old master (pid {}) is stopping too: the service stops", upgrade_parent_);
    }
    notifier_.stopping("stopping");
  }

  // One line for `systemctl status`: workers, connections, the last reload's result.
  std::string status_text() const {
    int serving = 0;
    for (const auto& w : workers_) {
      if (w.generation == generation_ && !w.told_to_stop) ++serving;
    }
    // The same totals as the status endpoint and `-s status`.
    std::uint64_t active = 0;
    std::uint64_t accepted = 0;
    if (stats_ != nullptr) {
      for (const auto& p : stats_->snapshot().proxies) {
        active += p.active;
        accepted += p.accepted;
      }
    } else {
      const auto totals = counters_->totals();
      active = totals.active;
      accepted = totals.accepted + retired_accepted_;
    }
    std::string text = std::to_string(serving) + " worker(s) serving, " + std::to_string(active) +
                       " active connection(s), " + std::to_string(accepted) + " accepted";
    if (!last_reload_.empty()) text += "; " + last_reload_;
    return text;
  }

  static std::string clock_time() {
    const time_t now = ::time(nullptr);
    tm local{};
    ::localtime_r(&now, &local);
    char buf[16];
    std::strftime(buf, sizeof buf, "%H:%M:%S", &local);
    return buf;
  }

  static void on_status_timer(Event& ev) {
    auto& m = *static_cast<Master*>(ev.data);
    if (m.stopping_) return;
    const std::string text = m.status_text();
    if (m.in_charge() && m.served_ && text != m.last_status_) {
      m.notifier_.status(text);
      m.last_status_ = text;
    }
    m.loop_.add_timer(m.status_timer_, kStatusInterval);
  }

  // WATCHDOG=1 while every worker slot has a live worker (or the first ones are starting):
  // a master whose workers keep dying stops pinging, and systemd restarts the service. A master
  // whose workers WINCH stopped is not alive either: while its upgrade's new master runs, that
  // one pings; once it is gone, this master starts workers again.
  static void on_watchdog_timer(Event& ev) {
    auto& m = *static_cast<Master*>(ev.data);
    m.loop_.add_timer(m.watchdog_timer_, m.watchdog_period_);
    if (!m.in_charge()) return;
    std::set<int> live;
    for (const auto& w : m.workers_) {
      if (!w.told_to_stop) live.insert(w.slot);
    }
    const bool alive =
        !m.served_ || m.stopping_ || static_cast<int>(live.size()) >= m.config_->worker_processes;
    if (alive) {
      m.notifier_.watchdog();
    } else {
      spdlog::warn("systemd watchdog: {} of {} worker(s) alive; not pinging", live.size(),
                   m.config_->worker_processes);
    }
  }

  // A reload asked for while another was pending runs now, and its askers wait for its verdict.
  void run_queued_reload() {
    if (!reload_again_) return;
    reload_again_ = false;
    control_clients_ = std::move(queued_clients_);
    queued_clients_.clear();
    reload();
  }

  // Answers the askers of the reload that just ended (or all, with `everyone`) and closes them.
  void answer_reload_waiters(const std::string& answer, bool everyone = false) {
    answer_all(control_clients_, answer);
    if (everyone) answer_all(queued_clients_, answer);
  }

  void answer_all(std::vector<Connection*>& list, const std::string& answer) {
    for (Connection* c : list) {
      (void)::send(c->fd.get(), answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      loop_.close_connection(*c);
    }
    list.clear();
  }

  static constexpr Msec kControlAcceptPause{500};

  // Each connection must send its request line within kControlRequestTimeout; past
  // kMaxUnrequestedControl of them waiting to, the oldest makes room for the newcomer.
  static void on_control_accept(Event& ev) {
    auto& self = *static_cast<Master*>(static_cast<Connection*>(ev.data)->data);
    if (ev.timedout) {  // the pause after EMFILE/ENFILE is over
      ev.timedout = false;
      if (!self.control_.is_open() || ev.active) return;  // closed (stop) or reopened meanwhile
      if (self.loop_.add_event(ev, event::EventKind::read, event::EventLoop::kLevel)) {
        self.loop_.add_timer(ev, kControlAcceptPause);  // logged by add_event; try again later
      }
      return;
    }
    UniqueFd fd(::accept4(self.control_.fd(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) {
      const int err = errno;
      if (err != EAGAIN && err != EWOULDBLOCK && err != ECONNABORTED && err != EINTR) {
        spdlog::error("accept() on the control socket failed: {}",
                      event::errno_code(err).message());
        // Out of descriptors (or memory), the level-triggered socket would wake the loop at
        // once, for ever: stop polling it for a while (as the acceptor does for proxies).
        (void)self.loop_.del_event(ev, event::EventKind::read);
        self.loop_.add_timer(ev, kControlAcceptPause);
      }
      return;
    }
    if (const auto why = control_peer_refused(fd.get())) {
      spdlog::warn("control socket: refused: {}", *why);
      const std::string answer = "error\nferry: refused: " + *why + "\n";
      (void)::send(fd.get(), answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      // A request left unread would make the close a reset, which loses the answer.
      char request[64];
      (void)::recv(fd.get(), request, sizeof request, MSG_DONTWAIT);
      return;
    }
    if (self.unrequested_.size() >= kMaxUnrequestedControl) {
      spdlog::warn("control socket: {} connections sent no request; closing the oldest",
                   self.unrequested_.size());
      self.loop_.close_connection(*self.unrequested_.front());
      self.unrequested_.erase(self.unrequested_.begin());
    }
    Connection* c = self.loop_.get_connection(std::move(fd));
    if (c == nullptr) {
      spdlog::warn("control socket: no free connection; refused one");
      return;
    }
    c->data = &self;
    c->read.handler = on_control_request;
    c->write.handler = [](Event&) {};
    if (self.loop_.add_connection(*c)) {
      self.loop_.close_connection(*c);
      return;
    }
    self.unrequested_.push_back(c);
    self.loop_.add_timer(c->read, kControlRequestTimeout);
    // The request usually came with the connection.
    on_control_request(c->read);
  }

  // A client waiting for a verdict gave up (EOF) before it came: forget it.
  static void on_waiting_client_read(Event& e) {
    auto& cc = *static_cast<Connection*>(e.data);
    char b[16];
    if (::read(cc.fd.get(), b, sizeof b) != 0) return;
    auto& m = *static_cast<Master*>(cc.data);
    std::erase(m.control_clients_, &cc);
    std::erase(m.queued_clients_, &cc);
    std::erase(m.upgrade_clients_, &cc);
    m.loop_.close_connection(cc);
  }

  static void on_control_request(Event& ev) {
    auto& c = *static_cast<Connection*>(ev.data);
    auto& self = *static_cast<Master*>(c.data);
    if (ev.timedout) {
      spdlog::warn("control socket: no request within {} ms; closing the connection",
                   kControlRequestTimeout.count());
      std::erase(self.unrequested_, &c);
      self.loop_.close_connection(c);
      return;
    }
    char buf[64];
    const ssize_t n = event::retry_eintr([&] { return ::read(c.fd.get(), buf, sizeof buf); });
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    std::erase(self.unrequested_, &c);
    self.loop_.del_timer(c.read);
    if (n >= 7 && std::string_view(buf, 7) == "reload\n") {
      spdlog::info("reload requested on the control socket");
      // While a reload is pending, this asker waits for the next one (its own).
      (self.pending_generation_ != 0 || self.load_ ? self.queued_clients_ : self.control_clients_)
          .push_back(&c);
      c.read.handler = on_waiting_client_read;
      self.reload();
      return;
    }
    if (n >= 8 && std::string_view(buf, 8) == "upgrade\n") {
      spdlog::info("binary upgrade requested on the control socket");
      const std::string why = self.upgrade();
      if (!why.empty()) {
        const std::string answer = "error\nferry: " + why + "\n";
        (void)::send(c.fd.get(), answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        self.loop_.close_connection(c);
        return;
      }
      // Answered when the new master exits (the upgrade failed) or this one stops.
      self.upgrade_clients_.push_back(&c);
      c.read.handler = on_waiting_client_read;
      return;
    }
    if (n >= 6 && std::string_view(buf, 6) == "ready\n") {
      const bool ready = self.served_ && self.pending_generation_ == 0 && !self.stopping_;
      const std::string_view answer = ready ? "ok\n" : "wait\n";
      (void)::send(c.fd.get(), answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      self.loop_.close_connection(c);
      return;
    }
    if (n >= 7 && std::string_view(buf, 7) == "status\n") {
      // "ok LENGTH\n": the client can tell a whole table from one cut short.
      std::string answer = "error\nferry: no statistics in this master\n";
      if (self.stats_ != nullptr) {
        const std::string table = worker::render_table(self.stats_->snapshot());
        answer = "ok " + std::to_string(table.size()) + "\n" + table;
      }
      // The table is small (a line per proxy, server and worker): it fits the socket buffer.
      std::size_t sent = 0;
      while (sent < answer.size()) {
        const ssize_t w = ::send(c.fd.get(), answer.data() + sent, answer.size() - sent,
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w <= 0) {
          spdlog::warn("status answer cut short: {}",
                       w == -1 ? event::last_error().message() : std::string("closed"));
          break;
        }
        sent += static_cast<std::size_t>(w);
      }
      self.loop_.close_connection(c);
      return;
    }
    const char answer[] = "error\nferry: unknown control request\n";
    (void)::send(c.fd.get(), answer, sizeof answer - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    self.loop_.close_connection(c);
  }

  // What served before a reload, until the reload's generation serves.
  struct Serving {
    std::unique_ptr<conf::Config> config;
    int generation = 0;
    event::SharedMemory health_shm;
    worker::HealthBoard* health_board = nullptr;
    std::size_t health_servers = 0;  // the servers its board was laid out for
  };

  std::string conf_file_;
  std::unique_ptr<conf::Config> config_;
  std::optional<Serving> previous_;
  Msec ready_timeout_ = kReadyTimeout;
  WorkerFailHook worker_fail_;
  int workers_started_ = 0;     // forks of a worker, for worker_fail_ and scribbling_workers_
  int scribbling_workers_ = 0;  // kScribbleStatsVariable
  int unready_generation_ = 0;  // kUnreadyGenerationVariable
  // kCheckNoSocketVariable
  bool check_no_socket_ = false;
  ListenerSet listeners_;
  event::SharedMemory shm_;
  event::AcceptMutexWord* mutex_word_ = nullptr;
  event::SharedMemory counters_shm_;
  worker::CountersTable* counters_ = nullptr;
  worker::CountersTable::Taken counters_taken_;  // never the workers' owner words
  UpgradeSegments segments_;  // the per-client table's, and what a binary upgrade passes
  worker::ClientLimits* client_limits_ = nullptr;
  std::unique_ptr<worker::StatsTable> stats_;  // the statistics, kept across reloads
  std::uint64_t retired_accepted_ = 0;         // by workers already reaped
  event::SharedMemory health_shm_;
  worker::HealthBoard* health_board_ = nullptr;
  std::size_t health_servers_ = 0;  // the servers health_board_ was laid out for
  event::EventLoop loop_;
  Connection signal_;
  ControlServer control_{loop_, on_control_accept, this};
  std::string control_path_;
  std::string pid_file_;
  std::vector<Connection*> unrequested_;      // control connections, oldest first, no request yet
  std::vector<Connection*> control_clients_;  // waiting for the pending reload's verdict
  std::vector<Connection*> queued_clients_;   // waiting for the reload queued behind it
  std::vector<Connection*> upgrade_clients_;  // `-s upgrade` askers, told if it fails
  std::list<WorkerProcess> workers_;          // stable addresses: channels point at their entry
  std::list<WorkerProcess> graveyard_;        // reaped; freed once the current epoll batch is done
  Event bury_;
  std::vector<std::unique_ptr<RespawnTimer>> respawn_timers_;
  Event reload_timeout_;
  // A reload's configuration being read on load_pool_ (item 15 of issue 17).
  struct PendingLoad {
    event::ThreadTask task;
    std::string file;
    conf::LoadResult result;
    bool abandoned = false;  // timed out: its result is dropped
  };
  static constexpr Msec kLoadTimeout{10'000};
  static constexpr Msec kForkWait{50};  // a fork put off while a read runs is tried again
  std::unique_ptr<PendingLoad> load_;
  Event load_timeout_;
  std::unique_ptr<event::ThreadPool> spent_pool_;  // the last read's, shut down
  std::unique_ptr<event::ThreadPool> load_pool_;   // a thread only while a file is being read
  Event kill_timer_;
  Event inherit_timer_;
  static constexpr Msec kInheritInterval{1000};
  Event share_sweep_timer_;
  static constexpr Msec kShareSweepInterval{5000};
  Event status_timer_;
  Event watchdog_timer_;
  Msec watchdog_period_{0};
  ServiceNotifier notifier_;
  std::string last_reload_;  // "last reload HH:MM:SS ok" or why it failed
  std::string last_status_;
  pid_t upgrade_parent_ = -1;      // the old master, when this one was started by a binary upgrade
  UpgradeState old_master_state_;  // what that old master is doing (read only)
  UpgradeState own_state_;         // what this master does, for the new master of its upgrade
  int exit_code_ = 0;
  bool upgraded_ = false;
  bool served_ = false;         // a generation of workers has served
  int generation_ = 0;          // the one serving (or starting, at first)
  int pending_generation_ = 0;  // a reload's, until it serves
  int last_generation_ = 0;     // the newest started: a number is never given twice
  pid_t new_master_ = -1;       // during a binary upgrade
  bool owns_control_path_ = true;
  bool reload_again_ = false;
  bool stopping_ = false;
  bool winched_ = false;
};

}  // namespace

int run_master(const std::string& conf_file, conf::Config config) {
  Master master(conf_file, std::move(config));
  return master.run();
}

}  // namespace ferry::master
