// Generations of workers and reloads: a reload reads the file on a thread of its own, starts a
// new generation and retires the old ones once every new worker serves; a generation that does
// not serve in time is given up and the previous one restored.
#include <algorithm>
#include <set>
#include <span>

#include <sys/socket.h>

#include <spdlog/spdlog.h>

#include "event/fd_passing.h"
#include "master/control.h"
#include "master/control_protocol.h"
#include "master/pid_file.h"
#include "worker/logging.h"

#include "master/master.h"

namespace ferry::master {

// A new generation of config_'s workers, numbered anew; it serves once each has reported ready
// (or, when it never does, is given up after ready_timeout_).
void Master::start_generation() {
  // The operator's runtime changes that still apply, before the new workers read them.
  reconcile_runtime();
  pending_generation_ = generation_ = ++last_generation_;
  stats_->set_generation(generation_);
  for (int slot = 0; slot < config_->worker_processes; ++slot) spawn(slot, generation_);
  arm(reload_timeout_, ready_timeout_, on_reload_timeout);
}

void Master::on_worker_ready(WorkerProcess& w) {
  w.ready = true;
  if (w.generation == pending_generation_) check_pending_ready();
}

bool generation_serves(const std::list<WorkerProcess>& workers, int generation) {
  bool any = false;
  for (const auto& w : workers) {
    if (w.generation != generation || w.told_to_stop) continue;
    if (!w.ready) return false;
    any = true;
  }
  return any;
}

// Called when a worker of the pending generation reports, and when one dies (it may have been
// the last one missing).
void Master::check_pending_ready() {
  if (pending_generation_ != 0 && !stopping_ && generation_serves(workers_, pending_generation_)) {
    generation_ready();
  }
}

// Every worker of the pending generation serves: retire the older ones.
void Master::generation_ready() {
  loop_.del_timer(reload_timeout_);
  const int gen = pending_generation_;
  pending_generation_ = 0;
  previous_.reset();  // no way back now
  runtime_before_reload_.reset();
  // Before the quit, on the same channel: a retiring worker that has sockets to the new
  // generation moves its sessions there as it stops.
  move_sessions(gen);
  // An upgrade's other master that leaves may have been waiting for these workers.
  answer_move_request();
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
    reload_succeeded();
  }
  served_ = true;
  // Before the askers get their answer: by the time `ferry -s reload` (ExecReload=) exits,
  // systemd has seen the reload end.
  if (in_charge()) notifier_.ready(status_text());
  answer_reload_waiters(protocol::kOk);
  run_queued_reload();
}

// The configuration now serving names another pid_file: the pid file and the control socket
// next to it move there (nginx moves its pid file too), so that `ferry -s` given the new
// configuration finds this master. Not while a new binary holds the usual names.
void Master::move_pid_file() {
  if (config_->pid_file == pid_file_ || !in_charge() || stopping_) return;
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

// reload_sessions = "move" (for a proxy at least): a SOCK_SEQPACKET socketpair between every
// older worker still running and every worker of generation `gen`, an end passed to each over its
// channel. The master keeps no end: a worker that dies closes its own, and the other sees it.
void Master::move_sessions(int gen) {
  if (!moves_sessions(*config_)) return;
  std::vector<WorkerProcess*> fresh;
  for (auto& w : workers_) {
    if (w.generation == gen && !w.told_to_stop && w.channel.fd) fresh.push_back(&w);
  }
  std::size_t pairs = 0;
  for (auto& old : workers_) {
    // Those retired by an earlier reload too: one still handing sessions to a generation that
    // is retiring now would otherwise be left without a destination (they would drain).
    if (old.generation >= gen || !old.ready || !old.channel.fd) continue;
    for (WorkerProcess* w : fresh) {
      const event::UniqueFd old_end = session_socket_to(*w);
      if (!old_end) continue;
      if (pass_move_end(old, old_end.get())) ++pairs;
    }
  }
  if (pairs > 0) spdlog::info("sessions move to generation {} ({} socket pair(s))", gen, pairs);
}

void Master::cap_draining_generations() {
  std::set<int> draining;
  for (const auto& w : workers_) {
    if (w.generation != generation_) draining.insert(w.generation);
  }
  while (static_cast<int>(draining.size()) > config_->max_draining_generations) {
    const int oldest = *draining.begin();
    spdlog::warn("more than {} generations draining: stopping generation {} now",
                 config_->max_draining_generations, oldest);
    for (auto& w : workers_) {
      if (w.generation == oldest) tell(w, worker::Command::terminate);
    }
    draining.erase(draining.begin());
  }
  arm_kill_timer();
}

// After WINCH: a new generation from the running configuration, ready once it serves.
void Master::restart_winched_workers() {
  winched_ = false;
  own_state_.publish(OldMasterState::serving);
  start_generation();
}

// Before the configuration's workers are forked: they look their names up at start.
void Master::register_stats() {
  if (const std::size_t missed = stats_->register_config(*config_)) {
    spdlog::warn(
        "{} proxy or server name(s) do not fit the statistics (too long or too many): "
        "not counted",
        missed);
  }
}

// A reaped worker's sessions to max_conns-limited servers ended with it: out of the count of
// its generation (the serving or the previous one; an older one takes no new sessions).
void Master::recover_server_conns(int generation, std::size_t share) noexcept {
  if (generation == generation_ && zones_.health.board != nullptr) {
    zones_.health.board->recover(zones_.health.servers, share);
  } else if (previous_ && generation == previous_->generation &&
             previous_->health.board != nullptr) {
    previous_->health.board->recover(previous_->health.servers, share);
  }
}

bool Master::new_health_board() {
  event::SharedMemory shm;
  if (shm.create(worker::HealthBoard::bytes_for(*config_))) {
    zones_.health.board = nullptr;
    return false;
  }
  zones_.health.board = worker::HealthBoard::create(shm.data(), *config_);
  zones_.health.servers = worker::HealthBoard::servers_of(*config_);
  zones_.health.shm = std::move(shm);
  return true;
}

void Master::reload() {
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
bool Master::start_load_thread() {
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
void Master::on_loaded(Event& ev) {
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

void Master::on_load_timeout(Event& ev) {
  auto& m = *static_cast<Master*>(ev.data);
  if (!m.load_ || m.stopping_) return;
  m.load_->abandoned = true;  // its thread still owns it until the lookup returns
  const std::string why = "reading " + m.conf_file_ + " took longer than " +
                          std::to_string(kLoadTimeout.count() / 1000) +
                          " s (a host name's DNS server does not answer?)";
  spdlog::error("reload rejected: {}; keeping the running configuration", why);
  m.reload_failed(why);
  m.answer_reload_waiters(protocol::error_answer(why + "\n"));
}

// WINCH: the file being read is given up (its thread owns it until the lookup returns), and a
// reload queued behind it too.
void Master::cancel_pending_read() {
  if (!load_) return;
  reload_again_ = false;
  if (load_->abandoned) return;
  load_->abandoned = true;
  loop_.del_timer(load_timeout_);
  reload_failed("cancelled by SIGWINCH");
}

void Master::finish_reload(conf::LoadResult result) {
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
    answer_reload_waiters(protocol::error_answer(text));
    run_queued_reload();  // one asked for while this file was read may find it fixed
    return;
  }
  for (const auto& w : result.warnings) spdlog::warn("{}", w.to_string());
  auto next = std::make_unique<conf::Config>(std::move(*result.config));
  // The certificates are read now: one that became unreadable since the check keeps the old
  // configuration serving, as any other error does.
  std::shared_ptr<const worker::tls::TlsContexts> next_tls;
  if (std::string why; !build_tls(*next, next_tls, &why)) {
    spdlog::error("reload rejected: {}; keeping the running configuration", why);
    reload_failed(why);
    answer_reload_waiters(protocol::error_answer(why + "\n"));
    run_queued_reload();
    return;
  }
  if (const auto failed = listeners_.apply(*next, next->worker_processes)) {
    spdlog::error("reload rejected: {}; keeping the running configuration", *failed);
    reload_failed(*failed);
    answer_reload_waiters(protocol::error_answer(*failed + "\n"));
    run_queued_reload();
    return;
  }
  std::string why;
  listeners_.advise_migrate_req(*next);
  if (worker::apply_log_settings(next->log, why)) {
    spdlog::error("cannot open the error log {}: {}; keeping the previous log", next->log.path,
                  why);
  }
  worker::set_log_role("master");
  raise_nofile_limit(*next);
  // Kept until the new generation serves: if it never does, the old one is the one serving.
  previous_ = Serving{std::move(config_), std::move(tls_), generation_, std::move(zones_.health)};
  config_ = std::move(next);
  tls_ = std::move(next_tls);
  register_stats();
  winched_ = false;
  // The new generation gets a board laid out for the new configuration; the old workers keep
  // their mapping of the old one.
  if (!new_health_board())
    spdlog::error("health checks of generation {} are off", last_generation_ + 1);

  start_generation();
}

// The pending generation was given up: the one still serving is the master's again, with its
// configuration (respawns, STATUS= and the watchdog count its workers), its listeners and its
// health board.
void Master::restore_serving(bool respawn) {
  if (!previous_) return;
  config_ = std::move(previous_->config);
  tls_ = std::move(previous_->tls);
  peer_uids_for_ = nullptr;  // its `user` and control_readers are looked up again
  generation_ = previous_->generation;
  zones_.health = std::move(previous_->health);
  previous_.reset();
  // The operator's changes as they were for it: what the rejected configuration dropped is back
  // (commands made while it was pending are lost with it).
  if (runtime_before_reload_) {
    const std::uint32_t kills = runtime_.kills();  // a kill made meanwhile keeps its number
    runtime_ = std::move(*runtime_before_reload_);
    runtime_.keep_kills_above(kills);
    runtime_before_reload_.reset();
    spdlog::info("runtime server changes restored with generation {}'s configuration", generation_);
    (void)publish_runtime(true);  // it fitted before the reload
  }
  register_stats();  // its servers are the configured ones again
  stats_->set_generation(generation_);
  // Every address of the old configuration is still open (removed ones are only closed once
  // a generation serves), so this reopens nothing; what the rejected one opened is closed.
  if (const auto failed = listeners_.apply(*config_, config_->worker_processes)) {
    spdlog::error("restoring the listeners of generation {} failed: {}", generation_, *failed);
  } else {
    listeners_.close_removed();
  }
  std::string why;
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
  answer_move_request();  // an upgrade's other master may wait for the workers that serve
}

// Stopping (or WINCH): the pending generation, its timeout and a reload queued behind it are
// given up. Its workers are told to stop by the caller.
void Master::cancel_pending_reload() {
  loop_.del_timer(reload_timeout_);
  drop_respawns(pending_generation_);
  pending_generation_ = 0;
  reload_again_ = false;
}

void Master::on_reload_timeout(Event& ev) {
  auto& m = *static_cast<Master*>(ev.data);
  if (m.pending_generation_ == 0) return;
  // Without a reload's configuration to go back to, the pending generation was the first one or
  // the workers a WINCH stopped, started again: none of this master's workers serve.
  const bool reloading = m.previous_.has_value();
  spdlog::error("generation {} did not report ready within {} ms; stopping it{}",
                m.pending_generation_, m.ready_timeout_.count(),
                reloading ? ", the previous workers keep serving" : "");
  for (auto& w : m.workers_) {
    if (w.generation == m.pending_generation_) m.tell(w, worker::Command::terminate);
  }
  m.drop_respawns(m.pending_generation_);
  m.pending_generation_ = 0;
  m.restore_serving();
  if (!reloading && m.served_ && m.new_master_ > 0 && !m.new_master_leaving_) {
    // HUP after WINCH during an upgrade: the new master still serves; this one stays as WINCH
    // left it, and may be told HUP again.
    spdlog::error("the workers did not start again; the new master (pid {}) keeps serving",
                  m.new_master_);
    m.winched_ = true;
    m.own_state_.publish(OldMasterState::winched);
    m.answer_reload_waiters(
        protocol::error_answer("ferry: the workers did not start again in time\n"));
    return;
  }
  if (!reloading) {
    // Nothing to fall back on: fail, so that a supervisor sees it and can restart us.
    spdlog::critical("the workers did not start; exiting");
    m.exit_code_ = 1;
    m.stop(false);
    return;
  }
  m.reload_failed("the new workers did not start in time");
  m.answer_reload_waiters(protocol::error_answer("ferry: the new workers did not start in time\n"));
  m.run_queued_reload();
}

// A reload asked for while another was pending runs now, and its askers wait for its verdict.
void Master::run_queued_reload() {
  if (!reload_again_) return;
  reload_again_ = false;
  control_clients_ = std::move(queued_clients_);
  queued_clients_.clear();
  reload();
}

}  // namespace ferry::master
