// SessionShared: the live-session list and the per-proxy lookups (rules, senders, access logs,
// counters) the sessions of one worker share, and their place in the per-client counts.
#include "worker/proxy/session_shared.h"

#include "worker/proxy/session.h"

namespace ferry::worker {

void SessionShared::link(Session& s, event::EventLoop& loop) noexcept {
  s.next = head_;
  if (head_ != nullptr) head_->prev = &s;
  head_ = &s;
  ++count_;
  if (counters_ != nullptr) {
    counters_->accepted.fetch_add(1, std::memory_order_relaxed);
    counters_->active.fetch_add(1, std::memory_order_relaxed);
  }
  publish_connections(loop);
}

void SessionShared::unlink(Session& s, event::EventLoop& loop, bool moved_away) noexcept {
  if (s.prev != nullptr) s.prev->next = s.next;
  if (s.next != nullptr) s.next->prev = s.prev;
  if (head_ == &s) head_ = s.next;
  --count_;
  if (counters_ != nullptr) {
    counters_->active.fetch_sub(1, std::memory_order_relaxed);
    if (moved_away) counters_->accepted.fetch_sub(1, std::memory_order_relaxed);
  }
  publish_connections(loop);
  if (count_ == 0 && on_empty_ != nullptr) on_empty_(on_empty_ctx_);
}

void SessionShared::publish_connections(event::EventLoop& loop) noexcept {
  if (stats_ != nullptr) {
    stats_->set_connections(stats_slot_, loop.pool().size() - loop.pool().free_count());
  }
}

ProxyCounters* SessionShared::proxy_stats(const conf::Proxy& proxy) {
  if (stats_ == nullptr) return nullptr;
  auto it = proxy_stats_.find(&proxy);
  if (it == proxy_stats_.end()) {
    it = proxy_stats_.emplace(&proxy, stats_->proxy_counters(stats_slot_, proxy.name)).first;
  }
  return it->second;
}

ServerCounters* SessionShared::server_stats(std::string_view upstream, const Peer& peer) {
  if (stats_ == nullptr) return nullptr;
  auto it = server_stats_.find(&peer);
  if (it == server_stats_.end()) {
    ServerCounters* c = stats_->server_counters(stats_slot_, upstream, peer.name);
    it = server_stats_.emplace(&peer, c).first;
  }
  return it->second;
}

ServerCounters* SessionShared::server_stats(std::string_view upstream, std::string_view server) {
  if (stats_ == nullptr || server.empty()) return nullptr;
  return stats_->server_counters(stats_slot_, upstream, server);
}

void SessionShared::reopen_logs() {
  for (auto& [path, log] : logs_) log->open();
}

AccessLog* SessionShared::access_log(const conf::Proxy& proxy) {
  if (proxy.access_log == "off") return nullptr;
  auto& slot = logs_[proxy.access_log];
  if (!slot) {
    if (!log_writer_) log_writer_ = AccessLog::make_writer();
    if (!log_writer_) return nullptr;  // logged; tried again for the next session
    slot = std::make_unique<AccessLog>(proxy.access_log, log_writer_);
  }
  return slot.get();
}

const AccessRules& SessionShared::rules(const conf::Proxy& proxy) {
  auto it = rules_.find(&proxy);
  if (it == rules_.end()) it = rules_.emplace(&proxy, AccessRules(proxy.access)).first;
  return it->second;
}

const AccessRules& SessionShared::senders(const conf::Proxy& proxy) {
  auto it = senders_.find(&proxy);
  if (it == senders_.end()) {
    it = senders_
             .emplace(&proxy,
                      AccessRules(proxy.accept_proxy_protocol_from, AccessRules::Mapped::always_v4))
             .first;
  }
  return it->second;
}

SessionShared::ClientPlace SessionShared::acquire_client(const conf::Proxy& proxy,
                                                         const event::SocketAddress& client,
                                                         std::uint32_t* bucket) noexcept {
  if (proxy.max_conns_per_client == 0 || limits_ == nullptr) return ClientPlace::not_counted;
  const std::uint64_t key = ClientLimits::key_of(
      *limits_secret_, proxy.name, client, {proxy.client_ipv4_prefix, proxy.client_ipv6_prefix});
  switch (limits_->acquire(key, static_cast<std::uint32_t>(proxy.max_conns_per_client),
                           limits_share_, bucket)) {
    case ClientLimits::Admit::ok: return ClientPlace::held;
    case ClientLimits::Admit::limit: return ClientPlace::limit;
    case ClientLimits::Admit::full: return ClientPlace::table_full;
  }
  return ClientPlace::not_counted;
}

void SessionShared::release_client(std::uint32_t bucket) noexcept {
  if (limits_ != nullptr) limits_->release(bucket, limits_share_);
}

}  // namespace ferry::worker
