// The worker cycle: loop + acceptor + a notifier that lets signal handlers stop it.
#include "worker/worker_cycle.h"

#include <unistd.h>

#include <atomic>
#include <optional>
#include <vector>

#include <spdlog/spdlog.h>

#include "event/acceptor.h"
#include "event/event_loop.h"
#include "event/notifier.h"

namespace ferry::worker {
namespace {

std::atomic<event::Notifier*> g_stop_notifier{nullptr};
std::atomic<bool> g_stop_requested{false};

void on_connection(event::Connection& c, void* ctx) {
  auto& loop = *static_cast<event::EventLoop*>(ctx);
  spdlog::info("accepted {} on {}; closing it (proxying is not built yet)", c.peer.to_string(),
               c.listening->address.to_string());
  loop.close_connection(c);
}

void on_stop(event::Notifier& n, std::uint64_t) {
  static_cast<event::EventLoop*>(n.data())->stop();
}

}  // namespace

void stop_worker() noexcept {
  g_stop_requested.store(true);
  if (event::Notifier* n = g_stop_notifier.load()) n->notify();
}

int run_worker_cycle(const WorkerSettings& settings) {
  const conf::Config& cfg = *settings.config;
  event::EventLoop loop;
  if (loop.init({.connections = static_cast<std::size_t>(cfg.worker_connections),
                 .epoll_events = cfg.events.epoll_events})) {
    return 1;
  }

  event::Notifier stop;
  if (stop.create(loop, on_stop, &loop, true)) return 1;
  g_stop_notifier.store(&stop);

  std::optional<event::AcceptMutex> mutex;
  if (cfg.events.accept_mutex && settings.accept_mutex != nullptr) {
    mutex.emplace(*settings.accept_mutex, ::getpid());
  }
  event::Acceptor acceptor;
  if (acceptor.init(loop, settings.listening,
                    {.multi_accept = cfg.events.multi_accept,
                     .mutex = mutex ? &*mutex : nullptr,
                     .delay = cfg.events.accept_mutex_delay},
                    on_connection, &loop)) {
    g_stop_notifier.store(nullptr);
    return 1;
  }

  // A stop requested before the notifier existed must not be lost.
  if (!g_stop_requested.load()) loop.run();

  g_stop_notifier.store(nullptr);
  acceptor.close();
  return 0;
}

}  // namespace ferry::worker
