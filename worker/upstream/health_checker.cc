// Probes: one per checked server, a small state machine driven by the loop.
#include "worker/upstream/health_checker.h"

#include <sys/socket.h>

#include <chrono>
#include <optional>
#include <string>

#include <spdlog/spdlog.h>

#include "event/connection_io.h"

namespace ferry::worker {

using event::Connection;
using event::Event;

struct Probe {
  HealthChecker* owner = nullptr;
  event::EventLoop* loop = nullptr;
  const conf::Upstream* upstream = nullptr;
  const conf::Server* server = nullptr;
  const conf::HealthCheck* check = nullptr;
  ServerHealth* health = nullptr;
  Connection* conn = nullptr;
  Event next;  // the interval timer
  std::string got;
  bool connected = false;
  int passes = 0;
  int fails = 0;
  std::optional<std::size_t> stats_index;  // the server in the shared statistics

  void begin() {
    // A name's first address as resolved at load (the others are not probed yet).
    const conf::Address& target = server->addresses.front();
    event::UniqueFd fd(
        ::socket(target.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd ||
        (::connect(fd.get(), target.sockaddr_ptr(), target.length) == -1 && errno != EINPROGRESS)) {
      finish(false, fd ? event::last_error().message() : "socket() failed");
      return;
    }
    conn = loop->get_connection(std::move(fd));
    if (conn == nullptr) {
      finish(false, "no free connection");
      return;
    }
    conn->data = this;
    conn->read.handler = conn->write.handler = on_event;
    connected = false;
    got.clear();
    if (loop->add_connection(*conn)) {
      finish(false, "epoll registration failed");
      return;
    }
    loop->add_timer(conn->write, check->timeout);
  }

  static void on_event(Event& ev) {
    auto& p = *static_cast<Probe*>(static_cast<Connection*>(ev.data)->data);
    if (ev.timedout) {
      p.finish(false, "timed out");
      return;
    }
    if (!p.connected) {
      if (!ev.write) return;
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(p.conn->fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        p.finish(false, std::system_category().message(err));
        return;
      }
      p.connected = true;
      if (!p.check->send.empty() &&
          ::send(p.conn->fd.get(), p.check->send.data(), p.check->send.size(), MSG_NOSIGNAL) !=
              static_cast<ssize_t>(p.check->send.size())) {
        p.finish(false, "cannot send the check's bytes");
        return;
      }
      if (p.check->expect.empty()) {
        p.finish(true, "");
        return;
      }
    }
    if (!p.conn->read.ready) return;
    std::byte buf[512];
    for (;;) {
      const auto r = event::recv(*p.conn, buf);
      if (r.status == event::IoStatus::ok) {
        p.got.append(reinterpret_cast<const char*>(buf), r.bytes);
        if (p.got.size() >= p.check->expect.size()) {
          const bool match = p.got.compare(0, p.check->expect.size(), p.check->expect) == 0;
          p.finish(match, match ? "" : "unexpected reply");
          return;
        }
        continue;
      }
      if (r.status == event::IoStatus::again) return;
      p.finish(false, "closed before the expected reply");
      return;
    }
  }

  void finish(bool ok, const std::string& why) {
    if (conn != nullptr) {
      loop->close_connection(*conn);
      conn = nullptr;
    }
    health->checks.fetch_add(1, std::memory_order_relaxed);
    const bool down = health->down.load(std::memory_order_relaxed) != 0;
    if (ok) {
      health->passes.fetch_add(1, std::memory_order_relaxed);
      fails = 0;
      if (down && ++passes >= check->passes) {
        health->down.store(0, std::memory_order_relaxed);
        spdlog::info("upstream \"{}\": server {} is up (health check passed {} time(s))",
                     upstream->name, server->address.text, passes);
      }
    } else {
      health->failures.fetch_add(1, std::memory_order_relaxed);
      passes = 0;
      if (!down && ++fails >= check->fails) {
        health->down.store(1, std::memory_order_relaxed);
        spdlog::warn("upstream \"{}\": server {} is down (health check failed {} time(s): {})",
                     upstream->name, server->address.text, fails, why);
      }
    }
    if (owner->stats_ != nullptr && stats_index) {
      const auto now = std::chrono::system_clock::now().time_since_epoch();
      owner->stats_->set_health(*stats_index, owner->generation_,
                                health->down.load(std::memory_order_relaxed) == 0, ok,
                                std::chrono::duration_cast<std::chrono::seconds>(now).count());
    }
    loop->add_timer(next, check->interval);
  }
};

HealthChecker::HealthChecker(event::EventLoop& loop, const conf::Config& cfg, HealthBoard& board)
    : loop_(loop), cfg_(cfg), board_(board) {}

HealthChecker::~HealthChecker() { stop(); }

void HealthChecker::start() {
  for (std::size_t u = 0; u < cfg_.upstreams.size(); ++u) {
    const conf::Upstream& up = cfg_.upstreams[u];
    if (!up.health_check) continue;
    for (std::size_t s = 0; s < up.servers.size(); ++s) {
      if (up.servers[s].down || up.servers[s].addresses.empty()) continue;
      auto p = std::make_unique<Probe>();
      p->owner = this;
      p->loop = &loop_;
      p->upstream = &up;
      p->server = &up.servers[s];
      p->check = &*up.health_check;
      p->health = &board_.at(cfg_, u, s);
      if (stats_ != nullptr)
        p->stats_index = stats_->server_index(up.name, up.servers[s].address.text);
      p->next.data = p.get();
      p->next.handler = [](Event& ev) { static_cast<Probe*>(ev.data)->begin(); };
      // The first round at once, so a server that is down at start is known quickly.
      loop_.add_timer(p->next, event::Msec{0});
      probes_.push_back(std::move(p));
    }
  }
}

void HealthChecker::stop() noexcept {
  for (auto& p : probes_) {
    loop_.del_timer(p->next);
    if (p->conn != nullptr) {
      loop_.close_connection(*p->conn);
      p->conn = nullptr;
    }
  }
  probes_.clear();
}

}  // namespace ferry::worker
