// The master's table of worker processes: spawning (the fork), the channel each reports on,
// telling them what to do, reaping them and respawning those that died, with a back-off.
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <time.h>

#include <algorithm>
#include <cstring>

#include <spdlog/spdlog.h>

#include "master/master.h"
#include "master/worker_start.h"

namespace ferry::master {

using event::UniqueFd;

// A worker that cannot be started (no fds, no processes left) is retried like one that died
// at once: with a growing delay.
void Master::spawn(int slot, int generation) {
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
  worker::WorkerCounters* counters = zones_.counters->take(zones_.counters_taken);
  if (counters == nullptr) {
    spdlog::warn(
        "all {} statistics slots are taken: worker {} (generation {}) will not be "
        "counted, limited per client or shown in the status",
        worker::CountersTable::kEntries, slot, generation);
  } else {
    // Before the fork: its block is zeroed before it can count anything.
    stats_->worker_started(zones_.counters->index_of(*counters), 0, generation, ::time(nullptr));
  }
  const pid_t self = ::getpid();
  // With the counters entry, so that one master's workers take at most half of the shares:
  // the other master of an upgrade always finds its own.
  const std::size_t share =
      counters != nullptr ? zones_.client_limits->claim(self) : worker::ClientLimits::kNoShare;
  const pid_t pid = ::fork();
  if (pid == -1) {
    spdlog::error("fork() for worker {} failed: {}", slot, event::last_error().message());
    (void)zones_.client_limits->give_back(share, self, self);
    if (counters != nullptr) {
      // Nothing was counted: the slot is free again.
      (void)stats_->fold(zones_.counters->index_of(*counters));
      zones_.counters->release(*counters, zones_.counters_taken);
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
        !zones_.client_limits->assign(share, self, ::getpid())) {
      spdlog::warn("worker {}: its per-client share was taken back (the master is gone)", slot);
      mine = worker::ClientLimits::kNoShare;
    }
    if (worker_fail_.applies(workers_started_)) {
      spdlog::warn("{}: worker start {} exits with code {}", kWorkerFailVariable, workers_started_,
                   worker_fail_.code);
      ::_exit(worker_fail_.code);
    }
    ::_exit(become_worker(slot, generation, worker_end.release(), counters, mine,
                          workers_started_ < scribbling_workers_));
  }
  ++workers_started_;
  (void)zones_.client_limits->assign(share, self, pid);  // false: the child saw to it
  if (counters != nullptr) {
    counters->owner.store(pid);
    stats_->worker_forked(zones_.counters->index_of(*counters), pid);
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
  spdlog::info("started worker {} (generation {}), pid {}", slot, generation, pid);
  if (loop_.add_event(w.channel.read, event::EventKind::read)) {
    // Unheard, its ready report would never come and a reload would wait out its timeout: the
    // worker failed to start. Reaped as one killed before it served, it is respawned with the
    // back-off of a quick death.
    spdlog::error("worker {} (pid {}): its channel cannot be watched; killing it", slot, pid);
    w.channel.fd.reset();
    if (::kill(pid, SIGKILL) == -1) {
      spdlog::error("kill({}, SIGKILL) failed: {}", pid, event::last_error().message());
    }
  }
}

// Runs in the forked child: drop everything that is the master's, become a worker.
int Master::become_worker(int slot, int generation, int channel, worker::WorkerCounters* counters,
                          std::size_t limits_share, bool scribble) {
  loop_.abandon();
  // First of all: from here on the statistics registry is read-only to this process.
  if (!stats_->enter_worker()) return worker::kFatalExit;
  segments_.enter_worker();
  ticket_secret_.enter_worker();
  signal_.fd.reset();
  link_.close();  // the other master must see the end of file when this one exits
  control_.drop();
  for (auto& w : workers_) w.channel.fd.reset();
  if (load_pool_) load_pool_->abandon();  // the master's reload thread is not in this process
  const conf::Config& cfg = *config_;

  worker::WorkerSettings settings;
  settings.config = &cfg;
  settings.listening = listeners_.keep_for_worker(slot, cfg.worker_processes, /*with_status=*/true);
  settings.accept_mutex = zones_.mutex_word;
  settings.channel = channel;
  settings.counters = counters;
  settings.client_limits = zones_.client_limits;
  settings.client_secret = &segments_.client_secret();
  settings.limits_share = limits_share;
  settings.stats = stats_.get();
  settings.tls = tls_.get();
  settings.stats_slot =
      counters != nullptr ? zones_.counters->index_of(*counters) : worker::StatsTable::kNoSlot;
  settings.health_board = zones_.health.board;
  // The operator's settings: read only here, through a mapping the memfd's seal keeps read only
  // (an mprotect() cannot undo it), so that no worker can change what the others see.
  if (zones_.admin != nullptr) {
    settings.server_admin =
        static_cast<const worker::ServerAdminTable*>(zones_.admin_shm.become_read_only());
    zones_.admin = nullptr;  // the master's pointer: not this process's mapping any more
    if (settings.server_admin == nullptr) {
      spdlog::error("runtime server changes are off in this worker (no read-only mapping)");
    }
  }
  // Worker 0 of the generation probes the servers; a respawned worker 0 takes over.
  settings.run_health_checks = slot == 0;
  settings.health_check_no_socket = check_no_socket_;
  settings.exit_on_adopt = adopt_exit_;
  settings.adopt_pause = event::Msec{adopt_pause_ms_};
  settings.slot = slot;
  settings.generation = generation;
  settings.withhold_ready = generation == unready_generation_;
  return start_worker(std::move(settings), scribble);
}

WorkerProcess* Master::find(pid_t pid) {
  for (auto& w : workers_) {
    if (w.pid == pid) return &w;
  }
  return nullptr;
}

void Master::tell(WorkerProcess& w, worker::Command cmd) {
  if (cmd == worker::Command::quit || cmd == worker::Command::terminate) w.told_to_stop = true;
  if (!w.channel.fd || !worker::channel_send(w.channel.fd.get(), static_cast<char>(cmd))) {
    if (cmd == worker::Command::admin) {
      // No signal says it: the worker reads the table when it next starts (a respawn), and the
      // operator's command names the workers that did not apply it.
      spdlog::warn(
          "worker {} (pid {}): its channel is full or closed; not told of the server "
          "settings",
          w.slot, w.pid);
      return;
    }
    // No channel (or it is full): a signal says the same.
    ::kill(w.pid, cmd == worker::Command::quit        ? SIGQUIT
                  : cmd == worker::Command::terminate ? SIGTERM
                                                      : SIGUSR1);
  }
}

void Master::on_channel(Event& ev) {
  auto& c = *static_cast<Connection*>(ev.data);
  auto& w = *static_cast<WorkerProcess*>(c.data);
  char buf[16];
  for (;;) {
    const ssize_t n = event::retry_eintr([&] { return ::read(c.fd.get(), buf, sizeof buf); });
    if (n > 0) {
      for (ssize_t i = 0; i < n; ++i) {
        if (buf[i] == static_cast<char>(worker::Report::ready)) w.master->on_worker_ready(w);
        if (buf[i] == static_cast<char>(worker::Report::applied)) w.master->on_admin_applied();
        if (buf[i] == static_cast<char>(worker::Report::sessions)) {
          w.master->on_sessions_report(w.pid);
        }
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

void Master::reap() {
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
                  "worker {} (pid {}) killed by signal {} (SIG{})", w->slot, pid, WTERMSIG(status),
                  sigabbrev_np(WTERMSIG(status)));
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
    // false: the other master of an upgrade took the share back (and recovered it) first.
    (void)zones_.client_limits->give_back(w->limits_share, pid, ::getpid());
    w->limits_share = worker::ClientLimits::kNoShare;
    if (w->counters != nullptr) {
      recover_server_conns(generation, zones_.counters->index_of(*w->counters));
      if (const std::size_t wrong = stats_->fold(zones_.counters->index_of(*w->counters))) {
        spdlog::warn(
            "worker {} (pid {}) left {} statistics counter(s) that cannot be true: its counts "
            "are dropped",
            w->slot, pid, wrong);
      }
      retired_accepted_ += zones_.counters->release(*w->counters, zones_.counters_taken);
    }
    w->counters = nullptr;
    // Not freed yet: a report for its channel may still be waiting later in this epoll batch
    // (a closed fd marks it stale). Freed once the batch is done.
    auto entry = std::find_if(workers_.begin(), workers_.end(),
                              [pid](const WorkerProcess& p) { return p.pid == pid; });
    graveyard_.splice(graveyard_.end(), workers_, entry);
    on_sessions_report(pid, true);  // a sessions request waits no longer for it
    bury_.data = this;
    bury_.handler = [](Event& ev) { static_cast<Master*>(ev.data)->graveyard_.clear(); };
    loop_.post(bury_);

    if (!expected && !winched_ &&
        (generation == generation_ || generation == pending_generation_)) {
      if (fatal && !served_) {
        // The very first workers cannot work: nothing serves, so fail now (a supervisor
        // sees it at once) rather than wait out the start-up timeout.
        spdlog::critical("worker {} cannot work (exit code {}) and no worker ever served: exiting",
                         slot, worker::kFatalExit);
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
  check_pending_ready();
}

void Master::schedule_respawn(int slot, int generation, Msec lived) {
  RespawnTimer& t = respawn_timer(slot);
  t.generation = generation;
  const Msec delay = t.backoff.after_death(lived);
  if (delay.count() == 0) {
    spawn(slot, generation);
    return;
  }
  spdlog::warn("worker {} died {} ms after starting; respawning in {} ms", slot, lived.count(),
               delay.count());
  loop_.add_timer(t.ev, delay);
}

// A generation given up: its workers that died are not replaced.
void Master::drop_respawns(int generation) {
  for (auto& t : respawn_timers_) {
    if (t->generation == generation) loop_.del_timer(t->ev);
  }
}

RespawnTimer& Master::respawn_timer(int slot) {
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

// SIGKILL for workers told to stop that overstay worker_shutdown_timeout (plus a grace).
void Master::arm_kill_timer(std::optional<Msec> bound) {
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
Msec Master::shutdown_bound() const {
  const Msec mine = config_->worker_shutdown_timeout;
  if (!previous_) return mine;
  const Msec theirs = previous_->config->worker_shutdown_timeout;
  return mine.count() == 0 || theirs.count() == 0 ? Msec{0} : std::max(mine, theirs);
}

}  // namespace ferry::master
