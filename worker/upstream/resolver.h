// Resolver: re-resolves the host names and SRV services of upstream servers (and the host names
// of servers added at run time) every `resolve_interval`, off the event loop — getaddrinfo
// (res_nquery for a service) runs on the worker's ThreadPool and the answer comes back to the
// loop through the pool's Notifier. A failed resolution keeps the last good addresses and is
// logged; a name that never resolved is retried every resolve_interval, or every
// kUnresolvedRetry when that is longer or "0" (which otherwise means: no re-resolution).
#pragma once

#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "conf/config.h"
#include "event/event_loop.h"
#include "event/thread_pool.h"

namespace ferry::worker {

struct Lookup;

class Resolver {
 public:
  // `apply` is called on the loop thread with a server and its new endpoints when they changed
  // (an address, or a service record's weight or priority class), and after the first lookup of
  // each name that completed, changed or not.
  using Apply = std::function<void(const conf::Server&, const std::vector<conf::Endpoint>&)>;
  static constexpr event::Msec kUnresolvedRetry{5'000};

  Resolver(event::EventLoop& loop, event::ThreadPool& pool, const conf::Config& cfg, Apply apply);
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  void start();
  void stop() noexcept;
  // Servers added at run time by host name, each with its upstream: each is looked up at once,
  // then as a configured name is; one this was given before and is not in `servers` any more
  // (the operator removed it) is looked up no more.
  void follow_added(
      const std::vector<std::pair<const conf::Upstream*, const conf::Server*>>& servers);
  [[nodiscard]] std::size_t lookups() const noexcept { return lookups_.size(); }

 private:
  friend struct Lookup;
  static void on_resolved(event::Event& ev);
  static void on_timer(event::Event& ev);
  Lookup& make_lookup(const conf::Upstream& u, const conf::Server& s);

  event::EventLoop& loop_;
  event::ThreadPool& pool_;
  const conf::Config& cfg_;
  Apply apply_;
  std::vector<std::unique_ptr<Lookup>> lookups_;
  bool stopped_ = false;
};

// True when some server of `cfg` has a name or service the Resolver would look up.
bool has_names_to_resolve(const conf::Config& cfg);

}  // namespace ferry::worker
