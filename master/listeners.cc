// ListenerSet::apply(): match wanted (address, reuseport, clone) against what is open.
#include "master/listeners.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <spdlog/spdlog.h>

namespace ferry::master {
namespace {

constexpr const char* kUnused = "(unused)";
// Entry::proxy of the status endpoint's socket.
constexpr const char* kStatus = "(status)";
// The status endpoint's queue: a few scrapers at a time.
constexpr int kStatusBacklog = 511;

// How the logs name what a socket serves.
std::string label(const std::string& name) {
  return name == kStatus ? "the status endpoint" : "proxy \"" + name + "\"";
}

// An address to listen on: a proxy's (one clone of it with reuseport) or the status endpoint's.
struct Wanted {
  event::SocketAddress address;
  const conf::Proxy* proxy;  // null for the status endpoint
  int clone;
  const conf::StatusSettings* status = nullptr;  // set for the status endpoint

  [[nodiscard]] std::string name() const { return proxy != nullptr ? proxy->name : kStatus; }
  [[nodiscard]] std::string label() const { return master::label(name()); }
  [[nodiscard]] bool reuseport() const { return proxy != nullptr && proxy->reuseport; }
  [[nodiscard]] int backlog() const { return proxy != nullptr ? proxy->backlog : kStatusBacklog; }
  [[nodiscard]] bool deferred_accept() const { return proxy != nullptr && proxy->deferred_accept; }
  [[nodiscard]] void* data() const {
    return proxy != nullptr ? static_cast<void*>(const_cast<conf::Proxy*>(proxy))
                            : static_cast<void*>(const_cast<conf::StatusSettings*>(status));
  }
};

bool is_ipv4_any(const event::SocketAddress& address) {
  if (address.family() != AF_INET) return false;
  return reinterpret_cast<const sockaddr_in*>(address.get())->sin_addr.s_addr == htonl(INADDR_ANY);
}

bool is_ipv6_any(const event::SocketAddress& address) {
  if (address.family() != AF_INET6) return false;
  const in6_addr& a = reinterpret_cast<const sockaddr_in6*>(address.get())->sin6_addr;
  return IN6_IS_ADDR_UNSPECIFIED(&a);
}

}  // namespace

bool ListenerSet::Entry::serves(const event::SocketAddress& address) const noexcept {
  if (ls->address == address) return true;
  return activated && dual_stack && is_ipv4_any(address) && address.port() == ls->address.port();
}

std::optional<std::string> ListenerSet::apply(const conf::Config& cfg, int workers) {
  // What is open now: the configured sockets, and systemd's sockets that were not (a reload may
  // name their address again).
  std::vector<Entry*> open;
  for (Entry& e : entries_) open.push_back(&e);
  // Removed by the last apply() but still open (no generation served without them yet): a
  // reload that is given up takes them back.
  for (Entry& e : removed_) open.push_back(&e);
  for (Entry& e : spare_) open.push_back(&e);
  auto from_systemd = [&](const event::SocketAddress& address) {
    return std::any_of(open.begin(), open.end(),
                       [&](const Entry* e) { return e->activated && e->serves(address); });
  };

  std::vector<Wanted> wanted;
  for (const conf::Proxy& proxy : cfg.proxies) {
    for (const conf::Address& a : proxy.listen) {
      const event::SocketAddress address(a.sockaddr_ptr(), a.length);
      if (from_systemd(address)) {
        // systemd's socket is the address's only one: no clones can be bound beside it.
        wanted.push_back({address, &proxy, 0});
        continue;
      }
      if (!proxy.reuseport) {
        wanted.push_back({address, &proxy, 0});
        continue;
      }
      // Never fewer clones than already open: a clone with a queue is not closed.
      int have = 0;
      for (const Entry& e : entries_) {
        if (e.ls->reuseport && e.ls->address == address) have = std::max(have, e.clone + 1);
      }
      for (int c = 0; c < std::max(workers, have); ++c) wanted.push_back({address, &proxy, c});
    }
  }
  // The status endpoint: one socket shared by every worker (any of them may answer), kept
  // across reloads like a proxy's.
  if (cfg.status) {
    const conf::Address& a = cfg.status->listen;
    wanted.push_back({event::SocketAddress(a.sockaddr_ptr(), a.length), nullptr, 0, &*cfg.status});
  }

  // First pass: which open socket each wanted one reuses (by index into `open`), or a new
  // socket. Nothing changes until every new socket is open.
  struct Plan {
    const Wanted* want;
    int reuse = -1;
    std::unique_ptr<event::Listening> fresh;
  };
  std::vector<Plan> plan;
  std::vector<bool> kept(open.size(), false);
  for (const Wanted& w : wanted) {
    Plan p{&w, -1, nullptr};
    for (std::size_t i = 0; i < open.size(); ++i) {
      const Entry& e = *open[i];
      if (kept[i] || !e.serves(w.address)) continue;
      if (e.activated || (e.ls->reuseport == w.reuseport() && e.clone == w.clone)) {
        kept[i] = true;
        p.reuse = static_cast<int>(i);
        break;
      }
    }
    if (p.reuse < 0) {
      // "*:P" and "[::]:P" both served by one dual-stack socket from systemd: it is taken once.
      const auto shared = std::find_if(plan.begin(), plan.end(), [&](const Plan& q) {
        return q.reuse >= 0 && open[static_cast<std::size_t>(q.reuse)]->activated &&
               open[static_cast<std::size_t>(q.reuse)]->serves(w.address);
      });
      if (shared != plan.end()) {
        const Entry& e = *open[static_cast<std::size_t>(shared->reuse)];
        if (shared->want->proxy == w.proxy && shared->want->status == w.status) {
          spdlog::info("{}: {} is served by systemd's dual-stack socket {}", w.label(),
                       w.address.to_string(), e.ls->address.to_string());
          continue;
        }
        return w.label() + ": cannot listen on " + w.address.to_string() +
               ": systemd's dual-stack socket " + e.ls->address.to_string() +
               " takes it and serves " + shared->want->label();
      }
      p.fresh = std::make_unique<event::Listening>();
      p.fresh->address = w.address;
      p.fresh->backlog = w.backlog();
      p.fresh->reuseport = w.reuseport();
      p.fresh->deferred_accept = w.deferred_accept();
      if (auto ec = event::open_listening(*p.fresh)) {
        // `plan` closes what this call opened.
        return w.label() + ": cannot listen on " + w.address.to_string() + ": " + ec.message();
      }
      spdlog::info("{} listening on {}{}", w.label(), p.fresh->address.to_string(),
                   w.reuseport() ? " (reuseport clone " + std::to_string(w.clone) + ")" : "");
    }
    plan.push_back(std::move(p));
  }

  std::vector<Entry> next;
  for (Plan& p : plan) {
    Entry e;
    if (p.reuse >= 0) {
      e = std::move(*open[static_cast<std::size_t>(p.reuse)]);
      if (e.activated && e.proxy != p.want->name()) {
        spdlog::info("{} listening on {} (socket from systemd)", p.want->label(),
                     e.ls->address.to_string());
      }
      if (!e.activated && e.ls->backlog != p.want->backlog()) {
        // listen() on a listening socket only changes its queue length. systemd's sockets keep
        // the Backlog= of their unit.
        e.ls->backlog = p.want->backlog();
        if (::listen(e.ls->fd.get(), e.ls->backlog) == -1) {
          spdlog::warn("listen({}) on {} to change the backlog failed: {}", e.ls->backlog,
                       e.ls->address.to_string(), event::last_error().message());
        }
      }
      // Compared with the kernel's, not what this master last set: a rolled-back upgrade's new
      // master may have changed it on the socket both share.
      const bool deferred = event::deferred_accept_of(e.ls->fd.get());
      if (e.activated && p.want->deferred_accept() && !deferred) {
        spdlog::warn(
            "{}: deferred_accept is not applied to {}, a socket from systemd (its unit's "
            "DeferAcceptSec= decides)",
            p.want->label(), e.ls->address.to_string());
      } else if (!e.activated && deferred != p.want->deferred_accept()) {
        // Kept on a failure: the socket accepts either way, only sooner or later.
        if (auto ec = event::set_deferred_accept(e.ls->fd.get(), p.want->deferred_accept())) {
          spdlog::warn("setsockopt(TCP_DEFER_ACCEPT) on {} failed: {}", e.ls->address.to_string(),
                       ec.message());
        }
      }
      e.ls->deferred_accept = event::deferred_accept_of(e.ls->fd.get());
    } else {
      e.ls = std::move(p.fresh);
    }
    e.proxy = p.want->name();
    e.clone = p.want->clone;
    e.ls->data = p.want->data();
    // A kept socket may change sides across a reload (a proxy's address given to the status
    // endpoint, or back): the workers of the new generation go by this flag.
    e.ls->status = p.want->status != nullptr;
    next.push_back(std::move(e));
  }
  std::vector<Entry> spare;
  std::vector<Entry> removed;
  for (std::size_t i = 0; i < open.size(); ++i) {
    if (kept[i]) continue;
    Entry& e = *open[i];
    if (!e.activated) {
      removed.push_back(std::move(e));
      continue;
    }
    if (e.proxy != kUnused) {
      spdlog::warn("the socket systemd passed for {} matches no listen address; kept open, unused",
                   e.ls->address.to_string());
    }
    e.proxy = kUnused;
    e.ls->data = nullptr;
    e.ls->status = false;
    spare.push_back(std::move(e));
  }
  entries_ = std::move(next);
  removed_ = std::move(removed);
  spare_ = std::move(spare);
  return {};
}

void ListenerSet::close_removed() noexcept {
  for (const Entry& e : removed_) {
    spdlog::info("{} no longer listens on {}", label(e.proxy), e.ls->address.to_string());
  }
  removed_.clear();
}

void ListenerSet::adopt(std::unique_ptr<event::Listening> ls, bool activated, const char* origin) {
  const int fd = ls->fd.get();
  int on = 0;
  socklen_t len = sizeof on;
  if (::getsockname(fd, ls->address.get(), ls->address.length_ptr()) == -1 ||
      ::getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, &len) == -1) {
    spdlog::error("{} fd {} is not a socket: {}", origin, fd, event::last_error().message());
    return;
  }
  // Ours from now on: close-on-exec for what we fork later, non-blocking for accept4() loops
  // (systemd passes its sockets blocking).
  const int flags = ::fcntl(fd, F_GETFL);
  if (::fcntl(fd, F_SETFD, FD_CLOEXEC) == -1 || flags == -1 ||
      ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) == -1) {
    spdlog::error("fcntl() on {} fd {} failed: {}", origin, fd, event::last_error().message());
    return;
  }
  ls->reuseport = on != 0;
  int v6only = 1;
  len = sizeof v6only;
  if (is_ipv6_any(ls->address) &&
      ::getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &len) == -1) {
    spdlog::error("getsockopt(IPV6_V6ONLY) on {} fd {} failed: {}", origin, fd,
                  event::last_error().message());
    v6only = 1;  // taken as IPv6 only: "*:P" is then opened by ferry, as without systemd
  }
  const bool dual_stack = activated && is_ipv6_any(ls->address) && v6only == 0;
  int clone = 0;
  for (const Entry& e : entries_) {
    if (!e.activated && e.ls->reuseport && e.ls->address == ls->address) {
      clone = std::max(clone, e.clone + 1);
    }
  }
  spdlog::info(
      "{} listening socket {} (fd {}){}", origin, ls->address.to_string(), fd,
      dual_stack ? ", dual-stack: it also serves *:" + std::to_string(ls->address.port()) : "");
  entries_.push_back(
      {std::move(ls), activated ? "(systemd)" : "(inherited)", clone, activated, dual_stack});
}

bool ListenerSet::adopt_inherited() {
  const char* value = std::getenv(kInheritVariable);
  if (value == nullptr) return false;
  const std::string list = value;
  ::unsetenv(kInheritVariable);
  std::size_t pos = 0;
  while (pos < list.size()) {
    std::size_t end = list.find(';', pos);
    if (end == std::string::npos) end = list.size();
    const std::string item = list.substr(pos, end - pos);
    pos = end + 1;
    const int fd = std::atoi(item.c_str());
    if (fd < 3) continue;
    auto ls = std::make_unique<event::Listening>();
    ls->fd.reset(fd);
    adopt(std::move(ls), item.ends_with('s'), "inherited");
  }
  return true;
}

int ListenerSet::adopt_activated() {
  const int n = sd_listen_fds(1);
  if (n < 0) {
    spdlog::error("sd_listen_fds() failed: {}", std::strerror(-n));
    return 0;
  }
  int taken = 0;
  for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + n; ++fd) {
    auto ls = std::make_unique<event::Listening>();
    ls->fd.reset(fd);
    if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
      spdlog::error("fd {} passed by systemd is not a listening stream socket; closed", fd);
      continue;
    }
    adopt(std::move(ls), true, "systemd passed");
    ++taken;
  }
  return taken;
}

std::string ListenerSet::prepare_for_exec() const {
  std::string value;
  auto pass = [&](const Entry& e) {
    const int fd = e.ls->fd.get();
    if (::fcntl(fd, F_SETFD, 0) == -1) {
      spdlog::error("fcntl({}, F_SETFD, 0) for the new binary failed: {}", fd,
                    event::last_error().message());
      return;
    }
    value += (value.empty() ? "" : ";") + std::to_string(fd) + (e.activated ? "s" : "");
  };
  for (const Entry& e : entries_) pass(e);
  for (const Entry& e : spare_) pass(e);  // every spare socket is systemd's
  return value;
}

std::vector<const event::Listening*> ListenerSet::for_worker(int slot, int workers,
                                                             bool with_status) const {
  std::vector<const event::Listening*> out;
  for (const Entry& e : entries_) {
    if (given_to(e, slot, workers, with_status)) out.push_back(e.ls.get());
  }
  return out;
}

bool ListenerSet::given_to(const Entry& e, int slot, int workers, bool with_status) {
  return (!e.ls->status || with_status) &&
         (!e.ls->reuseport || e.activated || e.clone % workers == slot);
}

std::vector<event::Listening*> ListenerSet::keep_for_worker(int slot, int workers,
                                                            bool with_status) {
  std::vector<event::Listening*> out;
  for (Entry& e : entries_) {
    if (given_to(e, slot, workers, with_status)) {
      out.push_back(e.ls.get());
    } else {
      e.ls->fd.reset();
    }
  }
  removed_.clear();
  spare_.clear();
  return out;
}

void ListenerSet::advise_migrate_req(const conf::Config& cfg) {
  if (advised_ || std::none_of(cfg.proxies.begin(), cfg.proxies.end(),
                               [](const conf::Proxy& p) { return p.reuseport; })) {
    return;
  }
  advised_ = true;
  constexpr const char* kPath = "/proc/sys/net/ipv4/tcp_migrate_req";
  const event::UniqueFd fd(::open(kPath, O_RDONLY | O_CLOEXEC));
  char c = 0;
  // Absent before Linux 5.14: nothing to turn on.
  if (!fd || ::read(fd.get(), &c, 1) != 1 || c != '0') return;
  spdlog::info(
      "reuseport is in use and net.ipv4.tcp_migrate_req is 0: connections queued on the "
      "socket of a worker that stops (reload, stop) are reset; with "
      "`sysctl net.ipv4.tcp_migrate_req=1` the kernel moves them to another worker's socket");
}

void ListenerSet::close_all() noexcept {
  entries_.clear();
  removed_.clear();
  spare_.clear();
}

}  // namespace ferry::master
