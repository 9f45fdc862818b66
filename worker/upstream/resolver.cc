// Resolver: one Lookup per named server, alternating between a timer and a thread-pool task.
#include "worker/upstream/resolver.h"

#include <arpa/inet.h>

#include <spdlog/spdlog.h>

#include "conf/values.h"

namespace ferry::worker {

struct Lookup {
  Resolver* owner = nullptr;
  const conf::Upstream* upstream = nullptr;
  const conf::Server* server = nullptr;
  conf::Address current;
  event::ThreadTask task;
  event::Event timer;
  // Written by the pool thread, read on the loop thread after the completion handoff.
  conf::Address result;
  std::string error;
};

namespace {

void resolve_off_loop(event::ThreadTask& task) {
  auto& l = *static_cast<Lookup*>(task.ctx);
  auto parsed = conf::parse_address(l.server->address.text);
  if (auto* why = std::get_if<std::string>(&parsed)) {
    l.error = *why;
  } else {
    l.error.clear();
    l.result = std::get<conf::Address>(std::move(parsed));
  }
}

}  // namespace

void Resolver::on_resolved(event::Event& ev) {
  auto& l = *static_cast<Lookup*>(ev.data);
  Resolver& r = *l.owner;
  if (r.stopped_) return;
  if (!l.error.empty()) {
    spdlog::warn("upstream \"{}\": resolving {} failed: {}; keeping {}", l.upstream->name,
                 l.server->address.text, l.error, l.current.text);
  } else if (!l.result.same_endpoint(l.current)) {
    char text[INET6_ADDRSTRLEN] = {};
    const auto& ss = l.result.storage;
    inet_ntop(
        ss.ss_family,
        ss.ss_family == AF_INET
            ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr)
            : static_cast<const void*>(&reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr),
        text, sizeof text);
    spdlog::info("upstream \"{}\": {} now resolves to {}", l.upstream->name, l.server->address.text,
                 text);
    l.current = l.result;
    r.apply_(*l.server, l.current);
  } else {
    spdlog::debug("upstream \"{}\": {} resolved, unchanged", l.upstream->name,
                  l.server->address.text);
  }
  r.loop_.add_timer(l.timer, l.upstream->resolve_interval);
}

void Resolver::on_timer(event::Event& ev) {
  auto& l = *static_cast<Lookup*>(ev.data);
  if (l.owner->stopped_) return;
  if (l.owner->pool_.post(l.task)) {
    // Queue full or pool stopping: try again at the next interval.
    l.owner->loop_.add_timer(l.timer, l.upstream->resolve_interval);
  }
}

bool is_literal_address(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos) return true;
  const std::string host = text.substr(0, colon);
  if (host == "*" || (!host.empty() && host.front() == '[')) return true;
  in_addr v4;
  return inet_pton(AF_INET, host.c_str(), &v4) == 1;
}

Resolver::Resolver(event::EventLoop& loop, event::ThreadPool& pool, const conf::Config& cfg,
                   Apply apply)
    : loop_(loop), pool_(pool), cfg_(cfg), apply_(std::move(apply)) {}

Resolver::~Resolver() { stop(); }

void Resolver::start() {
  for (const conf::Upstream& u : cfg_.upstreams) {
    if (u.resolve_interval.count() == 0) continue;
    for (const conf::Server& s : u.servers) {
      if (s.down || is_literal_address(s.address.text)) continue;
      auto l = std::make_unique<Lookup>();
      l->owner = this;
      l->upstream = &u;
      l->server = &s;
      l->current = s.address;
      l->task.work = resolve_off_loop;
      l->task.ctx = l.get();
      l->task.event.handler = &Resolver::on_resolved;
      l->task.event.data = l.get();
      l->timer.handler = &Resolver::on_timer;
      l->timer.data = l.get();
      loop_.add_timer(l->timer, u.resolve_interval);
      lookups_.push_back(std::move(l));
    }
  }
}

void Resolver::stop() noexcept {
  stopped_ = true;
  for (auto& l : lookups_) loop_.del_timer(l->timer);
}

}  // namespace ferry::worker
