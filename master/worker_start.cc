// The worker's side of the fork: signal dispositions, user switch, log ownership, CPU affinity
// and privileges, then the worker cycle.
#include "master/worker_start.h"

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <set>
#include <variant>

#include <spdlog/spdlog.h>

#include "conf/user.h"
#include "event/event_loop.h"
#include "master/process_title.h"
#include "worker/channel.h"
#include "worker/logging.h"
#include "worker/stats/stats_table.h"

namespace ferry::master {
namespace {

using event::UniqueFd;

// Runs before any thread of the worker exists: the bounding set and the ambient set are
// per thread.
bool switch_user(const std::string& name, conf::UserIds ids) {
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

// The master blocks its signals and reads them from a signalfd; a worker takes them as signals.
void set_worker_signals() {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigaction(SIGCHLD, &dfl, nullptr);
  struct sigaction stop_now {};
  stop_now.sa_handler = [](int) { worker::stop_worker(false); };
  ::sigaction(SIGTERM, &stop_now, nullptr);
  ::sigaction(SIGINT, &stop_now, nullptr);
  struct sigaction stop_gracefully {};
  stop_gracefully.sa_handler = [](int) { worker::stop_worker(true); };
  ::sigaction(SIGQUIT, &stop_gracefully, nullptr);
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  for (int sig : {SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH, SIGPIPE}) ::sigaction(sig, &ignore, nullptr);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

void set_affinity(int slot) {
  const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  if (cpus <= 1) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(static_cast<int>(slot % cpus), &set);
  if (::sched_setaffinity(0, sizeof set, &set) == -1) {
    spdlog::warn("sched_setaffinity(cpu {}) failed: {}", slot % cpus,
                 event::last_error().message());
  }
}

}  // namespace

// Root created or reopened the logs; the worker reopens them as `name` on USR1 (nginx chowns
// them the same way). Their folders must let that user through.
void give_logs_to(const conf::Config& cfg, const std::string& name, uid_t uid) {
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

int start_worker(worker::WorkerSettings settings, bool scribble) {
  set_worker_signals();
  // Only the master speaks to systemd (the unit allows any process of the service to).
  for (const char* name : {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}) ::unsetenv(name);
  set_process_title("ferry: worker process");
  worker::set_log_role("worker");
  const conf::Config& cfg = *settings.config;
  if (cfg.worker_cpu_affinity == conf::CpuAffinity::automatic) set_affinity(settings.slot);
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
  if (scribble) {
    spdlog::warn("{}: {}", kScribbleStatsVariable, settings.stats->scribble(settings.stats_slot));
  }
  settings.on_shutdown = [] { set_process_title("ferry: worker process is shutting down"); };
  // As before the master made itself undumpable (core dumps, ptrace for its own user), only
  // now that nothing of the master's is left in it (other workers' channels, listeners). A
  // worker that switched to `user` stays undumpable, as the kernel made it on the change of ids.
  if (!switched && ::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) == -1) {
    spdlog::warn("prctl(PR_SET_DUMPABLE, 1) failed: {}", event::last_error().message());
  }
  return worker::run_worker_cycle(settings);
}

}  // namespace ferry::master
