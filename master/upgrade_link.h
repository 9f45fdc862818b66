// UpgradeLink: the socket between the two masters of a binary upgrade. The master that leaves
// (the old one at QUIT or WINCH, the new one at a rollback's QUIT) asks the one that serves for
// sockets to its workers, and its own workers move their sessions over them (issue 20).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "event/connection.h"
#include "event/syscall_util.h"

namespace ferry::master {

// The first byte of each message (SOCK_SEQPACKET keeps them whole).
enum class LinkMessage : char {
  move_request = 'M',  // then a u32: how many of the leaving master's workers have sessions
  ends = 'E',          // with fds: the sockets for one of those workers, one per serving worker
  refused = 'N',       // then text: why the serving master gives none (the sessions drain)
};

struct LinkReceived {
  LinkMessage kind = LinkMessage::refused;
  std::uint32_t workers = 0;  // move_request
  std::string why;            // refused
  std::vector<event::UniqueFd> fds;
};

enum class LinkRead {
  message,  // `out` holds one
  empty,    // nothing more now
  closed,   // the other master has exited (or is an older binary that closed it)
  garbage,  // a message this binary cannot read: ignored, logged
};

class UpgradeLink {
 public:
  // The environment variable that carries the new master's end across exec.
  static constexpr const char* kVariable = "FERRY_UPGRADE_LINK_FD";

  // Old master, before forking the new binary: a fresh pair (the previous one, if any, closed).
  std::error_code create();
  // In the forked child about to exec: keeps the child's end across exec, named in kVariable.
  void pass_to_exec() noexcept;
  // Old master, once the child is forked: its end is the child's only.
  void forked() noexcept { child_end_.reset(); }
  // New master: takes the end named by kVariable (then unset), if it is a unix seqpacket socket.
  bool adopt();
  // In a forked worker, and when the other master has gone.
  void close() noexcept {
    conn_.fd.reset();
    child_end_.reset();
  }
  [[nodiscard]] bool is_open() const noexcept { return static_cast<bool>(conn_.fd); }
  // What the master's loop watches (its read handler and data are the master's to set).
  event::Connection& connection() noexcept { return conn_; }

  std::error_code send_move_request(std::uint32_t workers);
  std::error_code send_ends(std::span<const int> fds);
  std::error_code send_refusal(std::string_view why);
  LinkRead receive(LinkReceived& out);

 private:
  event::Connection conn_;
  event::UniqueFd child_end_;  // old master, between create() and forked()
};

}  // namespace ferry::master
