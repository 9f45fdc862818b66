// What systemd is told: READY/RELOADING/STOPPING, MAINPID during an upgrade, the STATUS= line
// and the watchdog's pings.
#include <signal.h>
#include <time.h>

#include <set>

#include <spdlog/spdlog.h>

#include "master/master.h"
#include "master/pid_file.h"

namespace ferry::master {

namespace {

std::string clock_time() {
  const time_t now = ::time(nullptr);
  tm local{};
  ::localtime_r(&now, &local);
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &local);
  return buf;
}

}  // namespace

void Master::reload_succeeded() {
  last_reload_ = "last reload " + clock_time() + " ok";
  stats_->reload_succeeded(::time(nullptr));
}

void Master::reload_failed(const std::string& first_error) {
  last_reload_ =
      "last reload " + clock_time() + " FAILED: " + first_error + " (running configuration kept)";
  stats_->reload_failed(first_error, ::time(nullptr));
  // READY=1 also after a rejected reload: systemd must not wait in "reloading".
  if (in_charge()) notifier_.ready(status_text());
}

void Master::notify_stopping() {
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
      // The pid file and the control socket are its again at once, not once this master's
      // last connection is done: it rings for them (SIGCHLD, which it reads as a hint). This
      // master must not remove them at exit then: the old master may be renaming over them
      // between this one's check and its unlink. (An older old master, which never reads the
      // page, writes both again when it has reaped this one.)
      handed_back_ = true;
      // Only files at the names the old master takes back (its PIDFILE.oldbin beside ours);
      // files at other names (a pid_file changed since) are this master's to remove.
      std::string ignored;
      const auto oldbin = read_pid_file(pid_file_ + std::string(kOldBinSuffix), ignored);
      files_left_to_old_master_ = oldbin && oldbin->pid == upgrade_parent_;
      old_master_state_.announce_leaving();
      if (::kill(upgrade_parent_, SIGCHLD) == -1) {
        spdlog::error("kill({}, CHLD) to the old master failed: {}", upgrade_parent_,
                      event::last_error().message());
      }
      return;
    }
    spdlog::info("old master (pid {}) is stopping too: the service stops", upgrade_parent_);
  }
  notifier_.stopping("stopping");
}

// One line for `systemctl status`: workers, connections, the last reload's result.
std::string Master::status_text() const {
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
    const auto totals = zones_.counters->totals();
    active = totals.active;
    accepted = totals.accepted + retired_accepted_;
  }
  std::string text = std::to_string(serving) + " worker(s) serving, " + std::to_string(active) +
                     " active connection(s), " + std::to_string(accepted) + " accepted";
  if (!last_reload_.empty()) text += "; " + last_reload_;
  return text;
}

void Master::on_status_timer(Event& ev) {
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
void Master::on_watchdog_timer(Event& ev) {
  auto& m = *static_cast<Master*>(ev.data);
  m.loop_.add_timer(m.watchdog_timer_, m.watchdog_period_);
  if (!m.in_charge()) return;
  // Handed back and taken: the old master's pings tell the truth about its workers; this
  // master's would hide a crash loop there for as long as it drains.
  if (m.handed_back_ && m.old_master_state_.hand_back_answer() == NewMasterState::taken_back) {
    return;
  }
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

}  // namespace ferry::master
