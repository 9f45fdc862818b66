// ListenerSet: the master's listening sockets across reloads. A socket whose address is
// unchanged is kept (the same fd, never closed and reopened, so nothing queued is lost); new
// addresses are opened; removed ones are closed once the new workers serve. With reuseport an
// address has one clone per worker, and clones are never closed while the address stays: when
// there are fewer workers than clones, each worker serves several. Sockets passed by systemd
// (socket activation) serve the address they are bound to and are never closed by a reload; a
// dual-stack one ([::]:P, IPV6_V6ONLY off) also serves the IPv4 wildcard "*:P". The status
// endpoint's address is one more shared socket, marked Listening::status.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "conf/config.h"
#include "event/listening.h"

namespace ferry::master {

class ListenerSet {
 public:
  // The environment variable that carries listening fds to a new binary ("3;4;5").
  static constexpr const char* kInheritVariable = "FERRY_LISTEN_FDS";
  // Takes the sockets a previous master passed in kInheritVariable (then unset), before the
  // first apply(): apply() keeps those whose address is still configured. Returns whether there
  // were any (this master is then the new one of a binary upgrade).
  bool adopt_inherited();
  // Takes the listening sockets systemd passed (LISTEN_FDS, then unset), before the first
  // apply(). Returns how many were taken.
  int adopt_activated();
  // Only in a forked child about to exec the new binary: clears FD_CLOEXEC on every socket and
  // returns the kInheritVariable value ("3;4;5s": "s" marks a socket from systemd).
  std::string prepare_for_exec() const;

  // Brings the sockets in line with `cfg` for `workers` workers, taking back sockets removed
  // earlier and not closed yet (a reload given up). On failure nothing changes (sockets opened
  // by this call are closed again) and the reason says which address failed.
  [[nodiscard]] std::optional<std::string> apply(const conf::Config& cfg, int workers);
  // Closes the sockets that the last apply() removed.
  void close_removed() noexcept;
  // The sockets worker `slot` of `workers` serves: every shared socket, and the reuseport
  // clones c with c % workers == slot. The status endpoint's socket (Listening::status, its
  // `data` a conf::StatusSettings) only `with_status`: a worker that does not know it would
  // take its `data` for a proxy.
  [[nodiscard]] std::vector<const event::Listening*> for_worker(int slot, int workers,
                                                                bool with_status = false) const;
  // Only in a forked worker: closes every socket it does not serve (other workers' reuseport
  // clones, removed and spare sockets; the status endpoint's without `with_status`), so that a
  // socket closed by the master and the workers that serve it refuses at once, and returns the
  // ones it serves (as for_worker()).
  std::vector<event::Listening*> keep_for_worker(int slot, int workers, bool with_status);
  // Once per master, the first time `cfg` uses reuseport: when net.ipv4.tcp_migrate_req is 0,
  // says (info) what turning it on would buy.
  void advise_migrate_req(const conf::Config& cfg);
  [[nodiscard]] std::size_t size() const noexcept { return entries_.size(); }
  void close_all() noexcept;

 private:
  struct Entry {
    std::unique_ptr<event::Listening> ls;
    std::string proxy;       // name of the proxy it serves ("(status)": the status endpoint)
    int clone = 0;           // index among the reuseport clones of its address
    bool activated = false;  // passed by systemd: one per address, shared, never closed
    // systemd's [::]:P with IPV6_V6ONLY off (what `ListenStream=P` makes): it takes IPv4
    // clients too, so it also serves "*:P" (= "0.0.0.0:P"), which could not be bound beside it.
    bool dual_stack = false;
    [[nodiscard]] bool serves(const event::SocketAddress& address) const noexcept;
  };
  void adopt(std::unique_ptr<event::Listening> ls, bool activated, const char* origin);
  // for_worker()'s rule, which keep_for_worker() follows too.
  static bool given_to(const Entry& e, int slot, int workers, bool with_status);

  std::vector<Entry> entries_;
  std::vector<Entry> removed_;
  std::vector<Entry> spare_;  // from systemd, not configured now: kept for a later reload
  bool advised_ = false;
};

}  // namespace ferry::master
