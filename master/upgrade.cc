// The binary upgrade (nginx's USR2): the new master is this binary exec'd with the listening
// sockets and the shared state; the old one tracks it and takes over again if it exits.
#include <dirent.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <spdlog/spdlog.h>

#include "master/control.h"
#include "master/control_protocol.h"
#include "master/inherited_fds.h"
#include "master/master.h"
#include "master/pid_file.h"
#include "master/process_title.h"

namespace ferry::master {

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

// USR2: start the binary found at our path as a new master that inherits the listening
// sockets; both run until the operator QUITs one of them. Returns why it did not, if it did not.
std::optional<UpgradeRefused> Master::upgrade() {
  using Kind = UpgradeRefused::Kind;
  if (stopping_) {
    spdlog::warn("SIGUSR2 ignored: the master is stopping");
    return UpgradeRefused{Kind::failed, "the master is stopping"};
  }
  if (new_master_ > 0 && new_master_leaving_) {
    spdlog::warn("SIGUSR2 ignored: the new master (pid {}) of the last upgrade is still leaving",
                 new_master_);
    return UpgradeRefused{Kind::busy, "the new master (pid " + std::to_string(new_master_) +
                                          ") of the last upgrade handed the service back and "
                                          "is still draining; try again once it has exited"};
  }
  if (new_master_ > 0) {
    spdlog::warn("SIGUSR2: an upgrade is already under way (new master pid {})", new_master_);
    return UpgradeRefused{Kind::busy, "an upgrade is already under way (new master pid " +
                                          std::to_string(new_master_) + ")"};
  }
  // nginx ignores USR2 then too: a third master would take over from one that is leaving.
  if (old_master_running()) {
    spdlog::warn("SIGUSR2 ignored: the old master (pid {}) of the last upgrade still runs",
                 upgrade_parent_);
    return UpgradeRefused{Kind::busy, "the old master (pid " + std::to_string(upgrade_parent_) +
                                          ") of the last upgrade still runs; try again once it "
                                          "has exited"};
  }
  if (load_) {  // its thread must not be running at the fork (see spawn())
    spdlog::warn("SIGUSR2 ignored: {} is being read for a reload; try again", conf_file_);
    return UpgradeRefused{Kind::busy,
                          "a reload is reading " + conf_file_ + "; try again once it is done"};
  }
  // From where the pid file is (a pid_file move may have failed), not where it should be.
  const std::string old_pid_file = pid_file_ + std::string(kOldBinSuffix);
  if (::rename(pid_file_.c_str(), old_pid_file.c_str()) == -1) {
    const std::string why =
        "rename(" + pid_file_ + ", " + old_pid_file + ") failed: " + event::last_error().message();
    spdlog::error("SIGUSR2: {}", why);
    return UpgradeRefused{Kind::failed, why};
  }
  // A new page per upgrade; without one the new master falls back to "hand the service back
  // while the old master runs", so the upgrade goes on.
  (void)own_state_.create(winched_ ? OldMasterState::winched : OldMasterState::serving);
  // A previous upgrade's (or the one from our own old master, gone by now).
  close_link();
  link_from_old_master_ = false;
  (void)link_.create();  // without it, sessions drain between the masters as before
  const pid_t pid = ::fork();
  if (pid == -1) {
    const std::string why = "fork() failed: " + event::last_error().message();
    spdlog::error("SIGUSR2: {}", why);
    ::rename(old_pid_file.c_str(), pid_file_.c_str());
    close_link();
    return UpgradeRefused{Kind::failed, why};
  }
  if (pid == 0) {
    // The new master gets the listening sockets and nothing else of ours, even an fd opened
    // without O_CLOEXEC (ferry's own all have it; security_test checks) or inherited so.
    close_on_exec_from(3);
    const std::string fds = listeners_.prepare_for_exec();
    ::setenv(ListenerSet::kInheritVariable, fds.c_str(), 1);
    own_state_.pass_to_exec();
    link_.pass_to_exec();
    segments_.pass_to_exec(*stats_);
    ticket_secret_.pass_to_exec();
    if (new_master_unready_) ::setenv("FERRY_TEST_UNREADY_GENERATION", "1", 1);
    // Last before exec: whatever is passed above (and only that) is kept by the new master.
    name_passed_fds();
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    std::vector<char*> argv;
    for (const auto& a : original_arguments()) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(binary_path().c_str(), argv.data());
    spdlog::critical("SIGUSR2: execv({}) failed: {}", binary_path(), event::last_error().message());
    ::_exit(worker::kFatalExit);
  }
  // systemd follows the new master from now on; it sends READY and STATUS itself.
  if (in_charge()) {
    notifier_.main_pid(pid, "binary upgrade: new master pid " + std::to_string(pid) +
                                " starting; old master pid " + std::to_string(::getpid()));
  }
  own_state_.drop_fd();
  link_.forked();
  open_link();
  new_master_ = pid;
  new_master_leaving_ = false;
  pid_file_ = old_pid_file;
  owns_control_path_ = false;  // the new master binds it
  spdlog::info("SIGUSR2: started new master {} (pid {}); pid file is now {}", binary_path(), pid,
               pid_file_);
  return std::nullopt;
}

bool Master::old_master_running() const {
  return upgraded_ && upgrade_parent_ > 1 && ::getppid() == upgrade_parent_;
}

// The old master's statistics are taken in every second until it has exited, then for good.
void Master::on_inherit_timer(Event& ev) {
  auto& m = *static_cast<Master*>(ev.data);
  if (m.segments_.inherit_more(*m.stats_, !m.old_master_running())) {
    const bool soon = m.old_master_leaving_since_ &&
                      event::monotonic_now() - *m.old_master_leaving_since_ < kOldMasterExitWait;
    m.loop_.add_timer(m.inherit_timer_, soon ? kOldMasterExitPoll : kInheritInterval);
  }
}

// Workers of a master killed during an upgrade drain on as orphans, their per-client shares
// still theirs; once they are gone (reaped by init), their counts are taken back out.
void Master::on_share_sweep_timer(Event& ev) {
  auto& m = *static_cast<Master*>(ev.data);
  (void)m.zones_.client_limits->sweep(::getpid());
  m.loop_.add_timer(m.share_sweep_timer_, kShareSweepInterval);
}

// The new master exited: the upgrade was rolled back (or failed). The service is this master's
// again, if it was not already (the new master said it was leaving).
void Master::upgrade_ended(int status) {
  loop_.del_timer(abort_timer_);
  const std::string how = WIFSIGNALED(status)
                              ? std::string("signal ") + sigabbrev_np(WTERMSIG(status))
                              : "code " + std::to_string(WEXITSTATUS(status));
  const bool taken_back = new_master_leaving_;
  spdlog::log(stopping_ || taken_back ? spdlog::level::info : spdlog::level::warn,
              "new master (pid {}) exited ({}){}", new_master_, how,
              taken_back ? "" : "; this master is in charge again");
  new_master_ = -1;
  new_master_leaving_ = false;
  close_link();
  if (taken_back) {
    take_files_back();  // again, if the rename or the bind failed when it rang
  } else {
    take_service_back("the new master exited (" + how + ")");
  }
}

// Whether `sig` is pending for process `pid` (/proc/PID/status: SigPnd for the thread, ShdPnd for
// the process; a master blocks its signals for its signalfd, so an unread one stays there).
static bool signal_pending(pid_t pid, int sig) {
  FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/status").c_str(), "re");
  if (f == nullptr) return false;
  bool pending = false;
  char line[256];
  while (std::fgets(line, sizeof line, f) != nullptr) {
    unsigned long long mask = 0;
    if (std::sscanf(line, "SigPnd: %llx", &mask) == 1 ||
        std::sscanf(line, "ShdPnd: %llx", &mask) == 1) {
      pending = pending || (mask & (1ULL << (sig - 1))) != 0;
    }
  }
  std::fclose(f);
  return pending;
}

// `ferry -s upgrade` gave up waiting for the new master to serve: it is told to QUIT, hands the
// service back (this master never stopped serving: the asker sends no WINCH) and drains what it
// took; the asker hears when this master is in charge again. A new master that does not act
// on QUIT (hung) is killed after kAbortGrace.
void Master::abort_upgrade() {
  if (new_master_ <= 0 || new_master_leaving_) return;
  spdlog::warn("the upgrade's asker gave up on it: telling the new master (pid {}) to stop",
               new_master_);
  if (::kill(new_master_, SIGQUIT) == -1) {
    spdlog::error("kill({}, QUIT) failed: {}", new_master_, event::last_error().message());
  }
  arm(abort_timer_, kAbortGrace, on_abort_timer);
}

void Master::on_abort_timer(Event& ev) {
  auto& m = *static_cast<Master*>(ev.data);
  if (m.new_master_ <= 0 || m.new_master_leaving_ || m.stopping_) return;
  // A master that read its QUIT is stopping (an older one, or one without the page, does not
  // say it hands back): only one that never took the signal in is hung.
  if (!signal_pending(m.new_master_, SIGQUIT)) return;
  spdlog::error(
      "the new master (pid {}) did not hand the service back within {} ms of QUIT: "
      "killing it",
      m.new_master_, kAbortGrace.count());
  if (::kill(m.new_master_, SIGKILL) == -1) {
    spdlog::error("kill({}, KILL) failed: {}", m.new_master_, event::last_error().message());
  }
}

// The new master rang (SIGCHLD): if it said in the state page that it hands the service back
// as it leaves (QUIT or TERM after a rollback), its pid file and control socket come back here
// now, not when its last connection is done, so that `-s reload`, `systemctl reload` and
// logrotate's `-s reopen` reach the master that serves. Once they are, the page says so: the
// leaving master stops feeding systemd's watchdog, which is this master's to feed again.
void Master::take_service_back_from_a_leaving_new_master() {
  if (new_master_ <= 0 || new_master_leaving_ || !own_state_.new_master_leaving()) return;
  loop_.del_timer(abort_timer_);
  new_master_leaving_ = true;
  if (stopping_) {
    // Leaving too: nothing to take back; the new master removes its own files at exit.
    spdlog::info("new master (pid {}) handed the service back; this master is stopping too",
                 new_master_);
    own_state_.decline_hand_back();
    return;
  }
  spdlog::warn(
      "new master (pid {}) handed the service back and drains; this master is in charge "
      "again",
      new_master_);
  take_service_back("the new master (pid " + std::to_string(new_master_) +
                    ") handed the service back");
  own_state_.acknowledge_hand_back();
}

// A new master that handed the service back leaves its pid file and control socket to the old
// master, which renames and binds its own over them (removing them here would race that and
// could take the old master's): unless the old master declined (it is stopping too) or is gone.
bool Master::leaves_files_to_old_master() const {
  if (!handed_back_ || !files_left_to_old_master_ || !old_master_running()) return false;
  return old_master_state_.hand_back_answer() != NewMasterState::declined;
}

// The control socket, then the pid file: in between, the pid file names the new master and the
// socket this one, which `ferry -s upgrade` reads as a hand-over under way (busy), never as "no
// master" (the package would restart the service). Each is tried again at the new master's exit
// if it failed.
void Master::take_files_back() {
  if (!stopping_ && control_.is_open() && !owns_control_path_) {
    // Over the new master's socket: a leaving new master removes neither file at exit.
    if (open_control_socket()) owns_control_path_ = true;
  }
  if (!pid_file_.ends_with(kOldBinSuffix)) return;
  const std::string back = pid_file_.substr(0, pid_file_.size() - kOldBinSuffix.size());
  if (::rename(pid_file_.c_str(), back.c_str()) == 0) {
    pid_file_ = back;
    return;
  }
  spdlog::error("rename({}, {}) failed: {}; writing it afresh", pid_file_, back,
                event::last_error().message());
  if (write_pid_file(back, ::getpid())) return;  // logged; tried again at the new master's exit
  remove_pid_file(pid_file_, ::getpid());
  pid_file_ = back;
}

// The pid file, the control socket and systemd's MAINPID come back to this master; its workers
// too, if WINCH stopped them (nginx restarts them when the new master exits).
void Master::take_service_back(const std::string& why) {
  take_files_back();
  // Once `ferry -s` finds this master, and before any fork: the asker must not wait out the
  // workers' start, nor read the pid file back in this master's name without an answer.
  answer_all(upgrade_clients_,
             protocol::error_answer("ferry: " + why + "; this master stays in charge\n"));
  if (!stopping_) {
    // Normally the new master handed the service back already (MAINPID=) before exiting.
    notifier_.main_pid(::getpid(), status_text());
    if (winched_) {
      // Nothing serves (nginx restarts its workers then too): READY=1 once they do.
      spdlog::warn("this master's workers were stopped by SIGWINCH: starting them again");
      restart_winched_workers();
    } else if (pending_generation_ == 0 || previous_) {
      // (A restart after WINCH still pending says READY=1 itself once its workers serve.)
      notifier_.ready(status_text());
    }
  }
}

// WINCH: the old master of an upgrade stops its workers gracefully, and stays.
void Master::winch() {
  // Its workers are leaving already, and the state page must keep saying "stopping": a new
  // master stopped later must not hand the service back to a master on its way out.
  if (stopping_) {
    spdlog::info("SIGWINCH ignored: the master is stopping");
    return;
  }
  // Only the old master of an upgrade whose new master runs may do without workers: a
  // terminal resize sends WINCH to a ferry in the foreground, which would stop serving
  // while it keeps its listeners (nginx obeys WINCH only when daemonized).
  if (in_charge()) {
    spdlog::warn(
        "SIGWINCH ignored: no binary upgrade is under way (WINCH stops the workers of "
        "an old master only while the new master of its upgrade runs)");
    return;
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
  answer_reload_waiters(protocol::error_answer("ferry: the reload was cancelled by SIGWINCH\n"),
                        true);
  // Their sessions move to the new master's workers (which serve: `-s upgrade` and nginx's
  // procedure send WINCH only then).
  ask_peer_for_session_sockets();
  for (auto& w : workers_) {
    if (!w.told_to_stop) tell(w, worker::Command::quit);
  }
  arm_kill_timer();
}

}  // namespace ferry::master
