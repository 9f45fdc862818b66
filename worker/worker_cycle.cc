// The worker cycle: loop, acceptor, channel to the master, relay sessions, graceful shutdown.
#include "worker/worker_cycle.h"
#include "worker/stats/server_view.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <optional>
#include <system_error>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "event/acceptor.h"
#include "event/event_loop.h"
#include "event/fd_passing.h"
#include "event/io_batch.h"
#include "event/notifier.h"
#include "event/thread_pool.h"
#include "worker/channel.h"
#include "worker/logging.h"
#include "worker/proxy/session_listing.h"
#include "worker/proxy/session_mover.h"
#include "worker/proxy/session_set.h"
#include "worker/stats/render.h"
#include "worker/status/status_server.h"
#include "worker/upstream/health_checker.h"
#include "worker/upstream/resolver.h"

namespace ferry::worker {
namespace {

// Set from signal handlers: 1 = graceful, 2 = now.
std::atomic<int> g_stop_request{0};
std::atomic<event::Notifier*> g_stop_notifier{nullptr};

// How old the connections gauge in the statistics may get.
constexpr event::Msec kGaugeInterval{1'000};

class Worker {
 public:
  explicit Worker(const WorkerSettings& s) : settings_(s), cfg_(*s.config) {}

  int run() {
    if (loop_.init({.connections = static_cast<std::size_t>(cfg_.worker_connections),
                    .epoll_events = cfg_.events.epoll_events})) {
      return kFatalExit;
    }
    if (cfg_.events.io_uring && batch_.init(kBatchEntries, SessionSet::on_batch_done)) {
      loop_.set_batch(&batch_, cfg_.events.io_uring_min_events);
    }
    if (stop_.create(loop_, on_stop_signal, this, true)) return kFatalExit;
    g_stop_notifier.store(&stop_);

    if (settings_.channel >= 0 && !open_channel()) return kFatalExit;

    std::optional<event::AcceptMutex> mutex;
    if (cfg_.events.accept_mutex && settings_.accept_mutex != nullptr) {
      mutex.emplace(*settings_.accept_mutex, ::getpid());
    }
    if (cfg_.status) {
      status_ = std::make_unique<StatusServer>(*cfg_.status, [this](std::string_view path) {
        if (settings_.stats == nullptr) return std::string();
        sessions_.publish_connections(loop_);  // this worker's own, as of now
        Snapshot snapshot = settings_.stats->snapshot();
        if (settings_.server_admin != nullptr) {
          annotate_servers(snapshot, cfg_, settings_.server_admin->read(), steady_ms());
        } else {
          annotate_servers(snapshot, cfg_, {}, steady_ms());
        }
        return render_cache_.get(path == "/status" ? render_json : render_prometheus,
                                 std::move(snapshot));
      });
    }
    for (const event::Listening* ls : settings_.listening) {
      if (ls->status) continue;
      SessionSet::prepare_listening(*ls, *static_cast<const conf::Proxy*>(ls->data));
    }
    const std::vector<const event::Listening*> listening(settings_.listening.begin(),
                                                         settings_.listening.end());
    if (acceptor_.init(loop_, listening,
                       {.multi_accept = cfg_.events.multi_accept,
                        .mutex = mutex ? &*mutex : nullptr,
                        .delay = cfg_.events.accept_mutex_delay,
                        // One worker has no one to share a wake-up with.
                        .exclusive = !cfg_.events.accept_mutex && cfg_.worker_processes > 1,
                        .refused = on_refused},
                       on_connection, this)) {
      return kFatalExit;
    }
    // The acceptor's duplicates are the only ones left: closing them (graceful stop) closes the
    // socket in this process.
    for (event::Listening* ls : settings_.listening) ls->fd.reset();
    // The operator's settings before the checks start: a server in maintenance is not probed.
    apply_server_admin(true);
    if (settings_.health_board != nullptr) {
      auto* board = static_cast<HealthBoard*>(settings_.health_board);
      sessions_.set_health_board(board);
      if (settings_.run_health_checks) {
        checker_ = std::make_unique<HealthChecker>(loop_, cfg_, *board);
        checker_->publish_to(settings_.stats, settings_.generation);
        if (settings_.health_check_no_socket) checker_->fail_sockets_for_tests();
        checker_->set_paused(sessions_.in_maintenance(cfg_));
        checker_->start();
      }
    }
    // Name resolution off the loop: the pool only starts when some server has a host name (a
    // server added at run time by name may have started it already: apply_server_admin()).
    if (has_names_to_resolve(cfg_) && start_resolver()) return kFatalExit;
    sessions_.set_stats(settings_.stats, settings_.stats_slot);
    sessions_.set_tls(settings_.tls);
    sessions_.prepare(cfg_);
    sessions_.set_counters(settings_.counters);
    sessions_.set_client_limits(settings_.client_limits, settings_.client_secret,
                                settings_.limits_share);
    sessions_.set_on_empty(on_sessions_empty, this);
    mover_ = std::make_unique<SessionMover>(loop_, sessions_, cfg_, listening);
    if (settings_.exit_on_adopt > 0) mover_->exit_at_batch_for_tests(settings_.exit_on_adopt);
    mover_->pause_before_adopting_for_tests(settings_.adopt_pause);
    kill_timer_.handler = on_kill_timer;
    kill_timer_.data = this;
    shutdown_timer_.handler = on_shutdown_timeout;
    shutdown_timer_.data = this;
    // Sessions publish the gauge as they start and end; status clients, connects under way and
    // refusals move it too: this keeps it at most this old.
    gauge_timer_.handler = on_gauge_timer;
    gauge_timer_.data = this;
    loop_.add_timer(gauge_timer_, kGaugeInterval);

    if (settings_.channel >= 0 && !settings_.withhold_ready) {
      channel_send(settings_.channel, static_cast<char>(Report::ready));
    }
    spdlog::debug("worker {} (generation {}) serving", settings_.slot, settings_.generation);

    // A stop that came before the notifier existed must not be lost.
    if (const int pending = g_stop_request.load()) pending == 1 ? begin_shutdown() : terminate();
    if (!loop_.stopping()) loop_.run();

    g_stop_notifier.store(nullptr);
    acceptor_.close();
    checker_.reset();
    // Join first: a getaddrinfo still running writes its answer into the resolver's lookups.
    pool_.shutdown();
    resolver_.reset();
    if (mover_) mover_->close_all();
    sessions_.close_all();
    if (status_) status_->close_all();
    if (channel_ != nullptr) loop_.close_connection(*channel_);
    return 0;
  }

 private:
  bool open_channel() {
    channel_ = loop_.get_connection(event::UniqueFd(settings_.channel));
    if (channel_ == nullptr) return false;
    channel_->data = this;
    channel_->read.handler = on_channel;
    channel_->write.handler = [](event::Event&) {};
    return !loop_.add_event(channel_->read, event::EventKind::read);
  }

  static void on_connection(event::Connection& c, void* ctx) {
    auto& self = *static_cast<Worker*>(ctx);
    if (c.listening->status) {
      if (self.status_) {
        self.status_->start(self.loop_, c);
      } else {
        self.loop_.close_connection(c);
      }
      return;
    }
    const auto& proxy = *static_cast<const conf::Proxy*>(c.listening->data);
    if (spdlog::should_log(spdlog::level::debug)) {  // the addresses cost a format each
      spdlog::debug("accepted {} on {}", c.peer.to_string(), c.listening->address.to_string());
    }
    self.sessions_.start(self.loop_, c, proxy, self.cfg_);
  }

  static void on_refused(const event::Listening& ls, void* ctx) {
    if (!ls.status) {
      static_cast<Worker*>(ctx)->sessions_.count_refused(*static_cast<const conf::Proxy*>(ls.data));
    }
  }

  static void on_channel(event::Event& ev) {
    auto& c = *static_cast<event::Connection*>(ev.data);
    auto& self = *static_cast<Worker*>(c.data);
    std::byte buf[64];
    for (;;) {
      // A byte that carries an fd ends what one read returns (the kernel never joins two
      // messages' fds): it is the last byte.
      event::ReceivedMessage msg;
      const std::error_code ec = event::receive_with_fds(c.fd.get(), buf, 1, msg);
      if (!ec && msg.bytes > 0) {
        for (std::size_t i = 0; i < msg.bytes; ++i) {
          const bool last = i + 1 == msg.bytes;
          self.command(static_cast<Command>(buf[i]),
                       last && !msg.fds.empty() ? std::move(msg.fds.front()) : event::UniqueFd());
        }
        if (self.channel_ == nullptr) return;
        continue;
      }
      if (ec.value() == EMSGSIZE) {
        spdlog::error("a message from the master carried more than one fd: ignored");
        continue;
      }
      if ((!ec && msg.bytes == 0) || (ec.value() != EAGAIN && ec.value() != EWOULDBLOCK)) {
        spdlog::warn("the master is gone (channel closed); shutting down gracefully");
        self.loop_.close_connection(c);
        self.channel_ = nullptr;
        self.begin_shutdown();
      }
      if (std::exchange(self.start_moving_, false)) self.mover_->start();
      return;
    }
  }

  void command(Command cmd, event::UniqueFd fd) {
    switch (cmd) {
      case Command::move_to:
      case Command::adopt_from:
        if (!fd.valid()) {
          spdlog::error("the master's move command came without its socket");
        } else if (cmd == Command::move_to) {
          mover_->add_destination(std::move(fd));
          // A socket that comes after the quit (an upgrade's: the other master answered) still
          // takes the sessions; started once the channel is read out, with all of them.
          if (shutting_down_) start_moving_ = true;
        } else {
          mover_->add_source(std::move(fd));
        }
        break;
      case Command::list_sessions:
      case Command::kill_sessions: answer_sessions(cmd, std::move(fd)); break;
      case Command::quit: begin_shutdown(); break;
      case Command::terminate: terminate(); break;
      case Command::admin: apply_server_admin(false); break;
      case Command::reopen: {
        std::string why;
        if (apply_log_settings(cfg_.log, why)) {
          spdlog::error("cannot reopen the error log {}: {}", cfg_.log.path, why);
        }
        set_log_role("worker");
        sessions_.reopen_logs();
        break;
      }
    }
  }

  // The resolver and its thread pool, made once: the pool's error when it cannot start.
  std::error_code start_resolver() {
    if (resolver_) return {};
    if (const std::error_code ec =
            pool_.init(loop_, "ferry-resolve", static_cast<std::size_t>(cfg_.thread_pool.threads),
                       static_cast<std::size_t>(cfg_.thread_pool.max_queue))) {
      return ec;
    }
    resolver_ = std::make_unique<Resolver>(
        loop_, pool_, cfg_,
        [this](const conf::Server& server, const std::vector<conf::Endpoint>& addresses) {
          sessions_.update_addresses(server, addresses);
          // The checker probes what the workers use: this worker's own resolution.
          if (checker_) checker_->set_addresses(server, addresses);
        });
    resolver_->start();
    return {};
  }

  // The servers added at run time by host name: the resolver follows them (started for them
  // when no configured server needed it).
  void follow_added_names() {
    const auto named = sessions_.added_names();
    if (named.empty() && !resolver_) return;
    if (const std::error_code ec = start_resolver()) {
      spdlog::error(
          "cannot start the resolver's threads ({}): servers added by host name stay "
          "without addresses",
          ec.message());
      return;
    }
    std::vector<std::pair<const conf::Upstream*, const conf::Server*>> servers;
    for (const auto& [upstream, server] : named) {
      for (const conf::Upstream& u : cfg_.upstreams) {
        if (u.name == upstream) servers.emplace_back(&u, server);
      }
    }
    resolver_->follow_added(servers);
  }

  // Reads the operator's server settings and applies them; says so to the master, which answers
  // the operator once every worker has (the version in the counters entry says which).
  void apply_server_admin(bool first) {
    if (settings_.server_admin == nullptr) return;
    const std::uint64_t version = settings_.server_admin->version();
    if (sessions_.apply_admin(cfg_, settings_.server_admin->read(), first) &&
        !kill_timer_.timer_set) {
      loop_.add_timer(kill_timer_, event::Msec{0});
    }
    if (checker_) checker_->set_paused(sessions_.in_maintenance(cfg_));
    follow_added_names();
    if (settings_.counters != nullptr) {
      settings_.counters->admin_version.store(version, std::memory_order_release);
    }
    if (!first && settings_.channel >= 0) {
      (void)channel_send(settings_.channel, static_cast<char>(Report::applied));
    }
  }

  // The master's `show sessions` / `kill session(s)`: the request line is at the start of
  // `fd` (a memfd), the answer replaces it; the master is told on the channel.
  void answer_sessions(Command cmd, event::UniqueFd fd) {
    if (!fd.valid()) {
      spdlog::error("the master's sessions request came without its memfd");
      return;
    }
    if (const auto why =
            answer_session_file(sessions_, cmd == Command::kill_sessions, fd.get(), loop_.now())) {
      spdlog::error("sessions request: {}", *why);
    }
    if (settings_.channel >= 0) {
      (void)channel_send(settings_.channel, static_cast<char>(Report::sessions));
    }
  }

  // The operator's kills, kKillBatch sessions per turn of the loop.
  static void on_kill_timer(event::Event& ev) {
    auto& self = *static_cast<Worker*>(ev.data);
    if (self.sessions_.kill_some(kKillBatch, self.killed_)) {
      // 1 ms, not 0: a timer due now would run again in this same pass over the expired ones,
      // and the other events would wait for every batch.
      self.loop_.add_timer(self.kill_timer_, event::Msec{1});
      return;
    }
    spdlog::info("closed {} session(s) the operator killed", std::exchange(self.killed_, 0));
  }

  static void on_stop_signal(event::Notifier& n, std::uint64_t) {
    auto& self = *static_cast<Worker*>(n.data());
    g_stop_request.load() == 1 ? self.begin_shutdown() : self.terminate();
  }

  void begin_shutdown() {
    if (shutting_down_) return;
    shutting_down_ = true;
    if (settings_.on_shutdown != nullptr) settings_.on_shutdown();
    acceptor_.close();
    if (checker_) checker_->stop();
    if (resolver_) resolver_->stop();
    spdlog::info("worker {} shutting down gracefully, {} session(s) open", settings_.slot,
                 sessions_.size());
    // reload_sessions = "move": the sessions go to the new generation's workers.
    if (mover_ && mover_->has_destinations()) mover_->start();
    if (sessions_.size() == 0) {
      if (mover_) mover_->close_sources();  // nothing adopted now would be run
      loop_.stop();
      return;
    }
    if (cfg_.worker_shutdown_timeout.count() > 0) {
      loop_.add_timer(shutdown_timer_, cfg_.worker_shutdown_timeout);
    }
  }

  void terminate() {
    acceptor_.close();
    if (checker_) checker_->stop();
    // First: it holds frozen sessions' pointers that the close below frees.
    if (mover_) mover_->close_all();
    sessions_.close_all();
    loop_.stop();
  }

  static void on_sessions_empty(void* ctx) {
    auto& self = *static_cast<Worker*>(ctx);
    if (!self.shutting_down_) return;
    // A batch read later in this iteration would be adopted and answered, then closed with
    // the loop: the old worker resumes it instead.
    if (self.mover_) self.mover_->close_sources();
    self.loop_.stop();
  }

  static void on_gauge_timer(event::Event& ev) {
    auto& self = *static_cast<Worker*>(ev.data);
    self.sessions_.publish_connections(self.loop_);
    self.loop_.add_timer(self.gauge_timer_, kGaugeInterval);
  }

  static void on_shutdown_timeout(event::Event& ev) {
    auto& self = *static_cast<Worker*>(ev.data);
    spdlog::warn("worker {}: worker_shutdown_timeout reached, closing {} session(s)",
                 self.settings_.slot, self.sessions_.size());
    if (self.mover_) self.mover_->close_all();
    self.sessions_.close_all();
    self.loop_.stop();
  }

  const WorkerSettings& settings_;
  const conf::Config& cfg_;
  // Sends queued in one iteration: more than this many are flushed early.
  static constexpr unsigned kBatchEntries = 256;
  event::EventLoop loop_;
  // Before sessions_: closing sessions cancels their queued sends.
  event::IoBatch batch_;
  event::Notifier stop_;
  event::Acceptor acceptor_;
  event::Connection* channel_ = nullptr;
  event::Event shutdown_timer_;
  event::Event gauge_timer_;
  // The operator's kills, closed kKillBatch per turn: 10,000 at once stalled the loop 0.3 s.
  static constexpr std::size_t kKillBatch = 128;
  event::Event kill_timer_;
  std::size_t killed_ = 0;
  RenderCache render_cache_;
  SessionSet sessions_;
  // After loop_: destroyed first, its connections still in the loop's pool.
  std::unique_ptr<StatusServer> status_;
  std::unique_ptr<HealthChecker> checker_;
  // After sessions_: its sockets and the sessions it holds go first.
  std::unique_ptr<SessionMover> mover_;
  bool start_moving_ = false;  // sockets to move sessions to came after the quit
  // The resolver before the pool, so the pool is joined before the lookups are freed.
  std::unique_ptr<Resolver> resolver_;
  event::ThreadPool pool_;
  bool shutting_down_ = false;
};

}  // namespace

void stop_worker(bool graceful) noexcept {
  int expected = 0;
  g_stop_request.compare_exchange_strong(expected, graceful ? 1 : 2);
  if (!graceful) g_stop_request.store(2);
  if (event::Notifier* n = g_stop_notifier.load()) n->notify();
}

int run_worker_cycle(const WorkerSettings& settings) {
  Worker worker(settings);
  return worker.run();
}

}  // namespace ferry::worker
