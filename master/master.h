// The master's state, private to master/: one Master whose methods are defined by concept across
// master_cycle.cc (run, signals, stop), processes.cc, generations.cc, upgrade.cc, systemd.cc,
// control_requests.cc, runtime_commands.cc and session_commands.cc.
//
// Errors in master/: a failed system call is logged where it fails, with errno's text. Then
//  - a wrapper of system calls returns std::error_code (as event/ does; pid_file.h);
//  - an operation whose reason the caller passes on (to a reload's asker, a terminal, the
//    statistics) returns [[nodiscard]] std::optional<std::string> — or a struct naming the kind
//    of refusal (UpgradeRefused) —: the reason, or nothing when it was done;
//  - an operation that logs its own failure returns [[nodiscard]] bool, true when it was done;
//  - (void) marks only a best-effort call whose failure changes nothing for the caller (an
//    answer to a client that may be gone, a del_event on an fd about to close), or one whose
//    failure the callee has logged and handled (a missing upgrade state page).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"
#include "conf/loader.h"
#include "event/accept_mutex.h"
#include "event/event_loop.h"
#include "event/shared_memory.h"
#include "event/thread_pool.h"
#include "master/control_server.h"
#include "master/listeners.h"
#include "master/respawn_backoff.h"
#include "master/runtime_servers.h"
#include "master/service_notifier.h"
#include "master/ticket_secret.h"
#include "master/upgrade_link.h"
#include "master/upgrade_segments.h"
#include "master/upgrade_state.h"
#include "worker/channel.h"
#include "worker/proxy/client_limits.h"
#include "worker/proxy/session_listing.h"
#include "worker/stats/stats_table.h"
#include "worker/tls/tls_contexts.h"
#include "worker/upstream/health_board.h"
#include "worker/worker_counters.h"

namespace ferry::master {

using event::Connection;
using event::Event;
using event::Msec;

// How long new workers have to report "ready" before a reload is declared failed.
constexpr Msec kReadyTimeout{10'000};
// After a worker has been told to stop: how long past its own bound before SIGKILL.
constexpr Msec kKillGrace{5'000};
// How often systemd's STATUS= line is refreshed (only sent when its text changed).
constexpr Msec kStatusInterval{5'000};
// The old master's pid file while a new binary takes over.
constexpr std::string_view kOldBinSuffix = ".oldbin";

// For tests only: "CODE:FIRST:COUNT" makes the workers the master starts as its FIRST-th to
// (FIRST+COUNT-1)-th (from 0, respawns and reloads included) exit with CODE at once, so that the
// respawn back-off and the rule for exit code 2 (kFatalExit) can be tested.
constexpr const char* kWorkerFailVariable = "FERRY_TEST_WORKER_FAIL";

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
  bool moves_to_peer = false;  // its sessions were offered to the other master of an upgrade
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
  RespawnBackoff backoff;
  class Master* master = nullptr;
};

// A health board in shared memory, laid out for one configuration's servers.
struct HealthZone {
  event::SharedMemory shm;
  worker::HealthBoard* board = nullptr;
  std::size_t servers = 0;  // the servers `board` was laid out for
};

// The shared memory the master maps before it forks workers (they inherit the mappings).
struct SharedZones {
  event::SharedMemory mutex_shm;
  event::AcceptMutexWord* mutex_word = nullptr;
  event::SharedMemory counters_shm;
  worker::CountersTable* counters = nullptr;
  worker::CountersTable::Taken counters_taken;    // never the workers' owner words
  worker::ClientLimits* client_limits = nullptr;  // mapped by UpgradeSegments: upgrades pass it
  HealthZone health;                              // the serving (or pending) generation's
  event::SharedMemory admin_shm;                  // the operator's server settings: the
  worker::ServerAdminTable* admin = nullptr;      // master writes, workers map it read only
};

// A write command's asker, answered once every worker has applied the change (or at
// kAdminApplyWait).
struct AdminWaiter {
  Connection* client = nullptr;
  std::uint64_t version = 0;
  std::chrono::steady_clock::time_point since;  // finer than the loop's milliseconds
  std::string answer;                           // what to say before the workers' line
};

// One worker's part of a sessions request: the memfd it answers in.
struct SessionsPart {
  pid_t pid = -1;
  event::UniqueFd memfd;                       // none: it was not asked (`failed` says why)
  std::optional<worker::ParsedAnswer> answer;  // once whole
  std::string failed;
};

// A `show sessions` / `kill session(s)` request (session_commands.cc).
struct SessionsQuery {
  Connection* client = nullptr;  // null: the asker left (a kill still runs)
  std::string line;              // as asked, for the log
  std::string request;           // the line for the workers (session_listing.h)
  bool kill = false;
  bool single = false;  // kill session ID
  bool json = false;
  std::optional<pid_t> only;  // the one worker asked
  std::vector<SessionsPart> parts;
  event::TimePoint since;
};

// A sessions answer the asker's socket did not take at once.
struct PendingAnswer {
  Connection* client = nullptr;
  std::string text;
  std::size_t sent = 0;
};

// What served before a reload, until the reload's generation serves.
struct Serving {
  std::unique_ptr<conf::Config> config;
  std::shared_ptr<const worker::tls::TlsContexts> tls;
  int generation = 0;
  HealthZone health;
};

// A reload's configuration being read on a thread of its own.
struct PendingLoad {
  event::ThreadTask task;
  std::string file;
  conf::LoadResult result;
  bool abandoned = false;  // timed out: its result is dropped
};

// Why a binary upgrade was not started.
struct UpgradeRefused {
  enum class Kind {
    busy,    // another upgrade, the end of one, or a reload's read is under way: try again later
    failed,  // it could not start (stopping, rename, fork)
  };
  Kind kind;
  std::string why;
};

// Whether every live worker of `generation` (one at least) has reported ready.
bool generation_serves(const std::list<WorkerProcess>& workers, int generation);

// Whether a proxy of `config` moves its sessions at a reload or an upgrade (reload_sessions).
bool moves_sessions(const conf::Config& config);

// Raises RLIMIT_NOFILE to the configuration's worker_rlimit_nofile (workers inherit it).
void raise_nofile_limit(const conf::Config& cfg);

class Master {
 public:
  Master(std::string conf_file, conf::Config config)
      : conf_file_(std::move(conf_file)),
        config_(std::make_unique<conf::Config>(std::move(config))) {}

  int run();

 private:
  // ---- master_cycle.cc: setup, signals, stop
  void read_test_hooks();
  [[nodiscard]] bool map_shared_zones();
  // tls_setup.cc: `cfg`'s TLS contexts into `out` (null when nothing has tls); false with
  // `why` (or, without it, a critical line in the log) when a context cannot be built.
  [[nodiscard]] bool build_tls(const conf::Config& cfg,
                               std::shared_ptr<const worker::tls::TlsContexts>& out,
                               std::string* why = nullptr);
  [[nodiscard]] bool open_signalfd();
  [[nodiscard]] bool open_control_socket();
  static void on_signal(Event& ev);
  void handle_signal(int sig);
  void winch();
  void stop(bool graceful);
  void arm(Event& ev, Msec delay, event::EventHandler handler);
  void reopen();

  // ---- processes.cc: the workers' table
  void spawn(int slot, int generation);
  int become_worker(int slot, int generation, int channel, worker::WorkerCounters* counters,
                    std::size_t limits_share, bool scribble);
  WorkerProcess* find(pid_t pid);
  void tell(WorkerProcess& w, worker::Command cmd);
  static void on_channel(Event& ev);
  void reap();
  void schedule_respawn(int slot, int generation, Msec lived);
  void drop_respawns(int generation);
  RespawnTimer& respawn_timer(int slot);
  void arm_kill_timer(std::optional<Msec> bound = std::nullopt);
  Msec shutdown_bound() const;
  event::AcceptMutex mutex() { return event::AcceptMutex(*zones_.mutex_word, ::getpid()); }

  // ---- generations.cc: generations and reloads
  void start_generation();
  void on_worker_ready(WorkerProcess& w);
  void check_pending_ready();
  void generation_ready();
  void move_sessions(int gen);
  void move_pid_file();
  void cap_draining_generations();
  void restart_winched_workers();
  void register_stats();
  void recover_server_conns(int generation, std::size_t share) noexcept;
  [[nodiscard]] bool new_health_board();
  void reload();
  [[nodiscard]] bool start_load_thread();
  static void on_loaded(Event& ev);
  static void on_load_timeout(Event& ev);
  void cancel_pending_read();
  void finish_reload(conf::LoadResult result);
  void restore_serving(bool respawn = true);
  void cancel_pending_reload();
  static void on_reload_timeout(Event& ev);
  void run_queued_reload();

  // ---- upgrade.cc: the binary upgrade
  std::optional<UpgradeRefused> upgrade();
  bool old_master_running() const;
  static void on_inherit_timer(Event& ev);
  static void on_share_sweep_timer(Event& ev);
  void upgrade_ended(int status);
  void abort_upgrade();
  static void on_abort_timer(Event& ev);
  void take_files_back();
  [[nodiscard]] bool leaves_files_to_old_master() const;
  void take_service_back_from_a_leaving_new_master();
  void take_service_back(const std::string& why);

  // ---- upgrade_move.cc: sessions that move to other workers
  event::UniqueFd session_socket_to(WorkerProcess& fresh);
  [[nodiscard]] bool pass_move_end(WorkerProcess& old, int fd);
  void open_link();
  void close_link();
  static void on_link(Event& ev);
  void ask_peer_for_session_sockets();
  void answer_move_request();
  void hand_ends_to_worker(std::vector<event::UniqueFd> ends);

  // ---- systemd.cc: what systemd is told
  // No new master of an upgrade runs, or the one that does handed the service back as it left.
  [[nodiscard]] bool in_charge() const noexcept { return new_master_ <= 0 || new_master_leaving_; }
  void reload_succeeded();
  void reload_failed(const std::string& first_error);
  void notify_stopping();
  std::string status_text() const;
  static void on_status_timer(Event& ev);
  static void on_watchdog_timer(Event& ev);

  // ---- control_requests.cc: the control socket's requests
  void answer_reload_waiters(std::string_view answer, bool everyone = false);
  void answer_all(std::vector<Connection*>& list, std::string_view answer);
  static void on_control_accept(Event& ev);
  static void on_waiting_client_read(Event& e);
  static void on_control_request(Event& ev);

  // ---- runtime_commands.cc: the operator's commands on servers (`ferry ctl`)
  // Runs a command line that is none of the fixed requests; answers and closes `c` (or keeps it
  // waiting for the workers).
  void run_command(Connection& c, std::string_view line);
  [[nodiscard]] bool publish_runtime(bool save, std::string* save_error = nullptr);
  void load_runtime_state();
  void reconcile_runtime();
  void on_admin_applied();
  static void on_admin_wait_timer(Event& ev);
  void answer_admin_waiters(bool all);
  [[nodiscard]] std::string show_servers(std::string_view upstream, bool json) const;
  // Which peers may run which commands (the uid and pid of `fd`'s peer, SO_PEERCRED).
  enum class Access { none, read, write };
  struct PeerAccess {
    Access access = Access::none;
    uid_t uid = 0;
    pid_t pid = 0;
    std::string why;  // when not `write`
  };
  [[nodiscard]] PeerAccess peer_access(int fd) const;

  // ---- session_commands.cc: `show sessions`, `kill session(s)` by id or client
  void run_sessions_command(Connection& c, std::span<const std::string_view> words,
                            const PeerAccess& peer, std::string_view line);
  void start_sessions_query();
  void on_sessions_report(pid_t pid, bool gone = false);
  static void on_sessions_timer(Event& ev);
  void finish_sessions_query();
  void send_long_answer(Connection& c, std::string text);
  static void on_answer_writable(Event& ev);

  static constexpr Msec kControlAcceptPause{500};
  static constexpr Msec kAdminApplyWait{1'000};
  static constexpr Msec kSessionsWait{1'000};      // for the workers' answers to a sessions request
  static constexpr Msec kAnswerWriteWait{10'000};  // for its asker to read a long answer
  static constexpr Msec kLoadTimeout{10'000};
  static constexpr Msec kForkWait{50};  // a fork put off while a read runs is tried again
  static constexpr Msec kInheritInterval{1000};
  static constexpr Msec kOldMasterExitPoll{10};     // once it closed the link,
  static constexpr Msec kOldMasterExitWait{2'000};  // for at most this long
  static constexpr Msec kShareSweepInterval{5000};
  static constexpr Msec kAbortGrace{10'000};  // a new master told to stop by an abort

  std::string conf_file_;
  std::unique_ptr<conf::Config> config_;
  // config_'s TLS contexts (termination, origination), built here where the keys are readable;
  // and the session ticket keys every generation's workers share (resumption across workers,
  // reloads and binary upgrades: their secret goes to the new binary).
  std::shared_ptr<const worker::tls::TlsContexts> tls_;
  std::shared_ptr<const worker::tls::TicketKeys> ticket_keys_;
  TicketSecret ticket_secret_;
  std::optional<Serving> previous_;
  Msec ready_timeout_ = kReadyTimeout;
  WorkerFailHook worker_fail_;
  int workers_started_ = 0;     // forks of a worker, for worker_fail_ and scribbling_workers_
  int scribbling_workers_ = 0;  // kScribbleStatsVariable
  int unready_generation_ = 0;  // kUnreadyGenerationVariable
  // kCheckNoSocketVariable
  bool check_no_socket_ = false;
  int adopt_exit_ = 0;               // kAdoptExitVariable
  int adopt_pause_ms_ = 0;           // kAdoptPauseVariable
  bool new_master_unready_ = false;  // kNewMasterUnreadyVariable
  ListenerSet listeners_;
  SharedZones zones_;
  UpgradeSegments segments_;  // the per-client table's, and what a binary upgrade passes
  std::unique_ptr<worker::StatsTable> stats_;  // the statistics, kept across reloads
  std::uint64_t retired_accepted_ = 0;         // by workers already reaped
  event::EventLoop loop_;
  Connection signal_;
  ControlServer control_{loop_, on_control_accept, this};
  std::string control_path_;
  std::string pid_file_;
  std::vector<Connection*> unrequested_;      // control connections, oldest first, no request yet
  std::vector<Connection*> control_clients_;  // waiting for the pending reload's verdict
  std::vector<Connection*> queued_clients_;   // waiting for the reload queued behind it
  std::vector<Connection*> upgrade_clients_;  // `-s upgrade` askers, told if it fails
  RuntimeServers runtime_;                    // the operator's changes to servers
  std::optional<RuntimeServers> runtime_before_reload_;  // until the reload's generation serves
  std::uint64_t admin_version_ = 0;                      // of the table as last published
  std::vector<AdminWaiter> admin_waiters_;
  // peer_access()'s uids of `user` and control_readers, for the configuration they were read from.
  mutable const conf::Config* peer_uids_for_ = nullptr;
  mutable std::optional<uid_t> writer_uid_;
  mutable std::vector<uid_t> reader_uids_;
  Event admin_wait_timer_;
  std::deque<SessionsQuery> session_queries_;  // the front one is in flight
  Event sessions_timer_;
  std::list<PendingAnswer> pending_answers_;
  std::list<WorkerProcess> workers_;    // stable addresses: channels point at their entry
  std::list<WorkerProcess> graveyard_;  // reaped; freed once the current epoll batch is done
  Event bury_;
  std::vector<std::unique_ptr<RespawnTimer>> respawn_timers_;
  Event reload_timeout_;
  std::unique_ptr<PendingLoad> load_;
  Event load_timeout_;
  std::unique_ptr<event::ThreadPool> spent_pool_;  // the last read's, shut down
  std::unique_ptr<event::ThreadPool> load_pool_;   // a thread only while a file is being read
  Event kill_timer_;
  Event inherit_timer_;
  Event share_sweep_timer_;
  Event abort_timer_;
  Event status_timer_;
  Event watchdog_timer_;
  Msec watchdog_period_{0};
  ServiceNotifier notifier_;
  std::string last_reload_;  // "last reload HH:MM:SS ok" or why it failed
  std::string last_status_;
  pid_t upgrade_parent_ = -1;      // the old master, when this one was started by a binary upgrade
  UpgradeState old_master_state_;  // what that old master is doing (read only)
  UpgradeState own_state_;         // what this master does, for the new master of its upgrade
  UpgradeLink link_;               // to the other master of an upgrade, while both run
  std::vector<pid_t> move_recipients_;   // leaving: our workers waiting for the other's sockets
  std::uint32_t peer_move_request_ = 0;  // serving: the other master's workers that wait
  int exit_code_ = 0;
  bool upgraded_ = false;
  // It closed the upgrade link (it is exiting): its statistics are polled for its exit.
  std::optional<event::TimePoint> old_master_leaving_since_;
  bool link_from_old_master_ = false;  // link_ is the one the old master passed
  bool served_ = false;                // a generation of workers has served
  int generation_ = 0;                 // the one serving (or starting, at first)
  int pending_generation_ = 0;         // a reload's, until it serves
  int last_generation_ = 0;            // the newest started: a number is never given twice
  pid_t new_master_ = -1;              // during a binary upgrade
  bool new_master_leaving_ = false;    // it handed the service back and drains: this one serves
  bool handed_back_ = false;           // this new master handed the service back to its old master
  bool files_left_to_old_master_ = false;  // its pid file and socket are at the old master's names
  bool owns_control_path_ = true;
  bool reload_again_ = false;
  bool stopping_ = false;
  bool winched_ = false;
};

}  // namespace ferry::master
