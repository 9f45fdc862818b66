// ListenerSet::apply(): match wanted (address, reuseport, clone) against what is open.
#include "master/listeners.h"

#include <fcntl.h>
#include <sys/socket.h>

#include <cstdlib>

#include <algorithm>

#include <spdlog/spdlog.h>

namespace ferry::master {
namespace {

struct Wanted {
  event::SocketAddress address;
  const conf::Proxy* proxy;
  int clone;
};

}  // namespace

std::error_code ListenerSet::apply(const conf::Config& cfg, int workers, std::string& why) {
  std::vector<Wanted> wanted;
  for (const conf::Proxy& proxy : cfg.proxies) {
    for (const conf::Address& a : proxy.listen) {
      const event::SocketAddress address(a.sockaddr_ptr(), a.length);
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

  // First pass: which open socket each wanted one reuses (by index), or a new socket.
  // Nothing in entries_ changes until every new socket is open.
  struct Plan {
    const Wanted* want;
    int reuse = -1;
    std::unique_ptr<event::Listening> fresh;
  };
  std::vector<Plan> plan;
  std::vector<bool> kept(entries_.size(), false);
  for (const Wanted& w : wanted) {
    Plan p{&w, -1, nullptr};
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      const Entry& e = entries_[i];
      if (!kept[i] && e.ls->address == w.address && e.ls->reuseport == w.proxy->reuseport &&
          e.clone == w.clone) {
        kept[i] = true;
        p.reuse = static_cast<int>(i);
        break;
      }
    }
    if (p.reuse < 0) {
      p.fresh = std::make_unique<event::Listening>();
      p.fresh->address = w.address;
      p.fresh->backlog = w.proxy->backlog;
      p.fresh->reuseport = w.proxy->reuseport;
      if (auto ec = event::open_listening(*p.fresh)) {
        why = "proxy \"" + w.proxy->name + "\": cannot listen on " + w.address.to_string() + ": " +
              ec.message();
        return ec;  // `plan` closes what this call opened
      }
      spdlog::info("proxy \"{}\" listening on {}{}", w.proxy->name, p.fresh->address.to_string(),
                   w.proxy->reuseport ? " (reuseport clone " + std::to_string(w.clone) + ")" : "");
    }
    plan.push_back(std::move(p));
  }

  std::vector<Entry> next;
  for (Plan& p : plan) {
    Entry e;
    if (p.reuse >= 0) {
      e = std::move(entries_[static_cast<std::size_t>(p.reuse)]);
      if (e.ls->backlog != p.want->proxy->backlog) {
        // listen() on a listening socket only changes its queue length.
        e.ls->backlog = p.want->proxy->backlog;
        if (::listen(e.ls->fd.get(), e.ls->backlog) == -1) {
          spdlog::warn("listen({}) on {} to change the backlog failed: {}", e.ls->backlog,
                       e.ls->address.to_string(), event::last_error().message());
        }
      }
    } else {
      e.ls = std::move(p.fresh);
    }
    e.proxy = p.want->proxy->name;
    e.clone = p.want->clone;
    e.ls->data = const_cast<conf::Proxy*>(p.want->proxy);
    next.push_back(std::move(e));
  }
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    if (!kept[i]) removed_.push_back(std::move(entries_[i]));
  }
  entries_ = std::move(next);
  return {};
}

void ListenerSet::close_removed() noexcept {
  for (const Entry& e : removed_) {
    spdlog::info("proxy \"{}\" no longer listens on {}", e.proxy, e.ls->address.to_string());
  }
  removed_.clear();
}

void ListenerSet::adopt_inherited() {
  const char* value = std::getenv(kInheritVariable);
  if (value == nullptr) return;
  const std::string list = value;
  ::unsetenv(kInheritVariable);
  std::size_t pos = 0;
  while (pos < list.size()) {
    std::size_t end = list.find(';', pos);
    if (end == std::string::npos) end = list.size();
    const int fd = std::atoi(list.substr(pos, end - pos).c_str());
    pos = end + 1;
    if (fd < 3) continue;
    auto ls = std::make_unique<event::Listening>();
    ls->fd.reset(fd);
    int on = 0;
    socklen_t len = sizeof on;
    if (::getsockname(fd, ls->address.get(), ls->address.length_ptr()) == -1 ||
        ::getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, &len) == -1) {
      spdlog::error("inherited fd {} is not a socket: {}", fd, event::last_error().message());
      continue;
    }
    // The new binary may not have been built with the same flags: make it ours again.
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    ls->reuseport = on != 0;
    int clone = 0;
    for (const Entry& e : entries_) {
      if (e.ls->reuseport && e.ls->address == ls->address) clone = std::max(clone, e.clone + 1);
    }
    spdlog::info("inherited listening socket {} (fd {})", ls->address.to_string(), fd);
    entries_.push_back({std::move(ls), "(inherited)", clone});
  }
}

std::string ListenerSet::prepare_for_exec() const {
  std::string value;
  for (const Entry& e : entries_) {
    const int fd = e.ls->fd.get();
    ::fcntl(fd, F_SETFD, 0);
    value += (value.empty() ? "" : ";") + std::to_string(fd);
  }
  return value;
}

std::vector<const event::Listening*> ListenerSet::for_worker(int slot, int workers) const {
  std::vector<const event::Listening*> out;
  for (const Entry& e : entries_) {
    if (!e.ls->reuseport || e.clone % workers == slot) out.push_back(e.ls.get());
  }
  return out;
}

void ListenerSet::close_all() noexcept {
  entries_.clear();
  removed_.clear();
}

std::vector<int> ListenerSet::fds() const {
  std::vector<int> out;
  for (const Entry& e : entries_) out.push_back(e.ls->fd.get());
  for (const Entry& e : removed_) out.push_back(e.ls->fd.get());
  return out;
}

}  // namespace ferry::master
