// UpgradeState: what the old master of a binary upgrade is doing, in a page it shares with the
// new master (a memfd passed across exec), so that a new master that stops can tell a rollback
// (the old master serves again: hand the service back) from an old master that is leaving too.
#pragma once

#include <atomic>
#include <cstdint>
#include <system_error>

#include "event/syscall_util.h"

namespace ferry::master {

enum class OldMasterState : std::uint32_t {
  unknown = 0,   // no page (an older binary started us, or it could not be made)
  serving = 1,   // workers serve, or are being started again (HUP after WINCH)
  winched = 2,   // workers stopped by WINCH, the master stays (the operator may HUP it)
  stopping = 3,  // QUIT or TERM: it drains and exits; it cannot take the service back
};

const char* to_string(OldMasterState state) noexcept;

// What the new master says back in the same page (zero in a page no new master wrote to: an
// older binary's, which never reads this word).
enum class NewMasterState : std::uint32_t {
  unknown = 0,
  leaving = 1,     // stopping, it handed the service back: the old master takes over at once
  taken_back = 2,  // written by the old master once it did: the leaving one stops pinging
  declined = 3,    // written by an old master that is stopping too: the leaving one cleans up
};

class UpgradeState {
 public:
  // The environment variable that carries the page's fd to the new binary.
  static constexpr const char* kVariable = "FERRY_UPGRADE_STATE_FD";
  // Test only: the old master's page carries a wrong magic word (a page of another program, or
  // of a layout this binary does not know).
  static constexpr const char* kBadMagicVariable = "FERRY_TEST_PASS_BAD_STATE_PAGE";

  UpgradeState() = default;
  ~UpgradeState();
  UpgradeState(const UpgradeState&) = delete;
  UpgradeState& operator=(const UpgradeState&) = delete;

  // At start: takes the test hook kBadMagicVariable out of the environment.
  void take_test_hook() noexcept;
  // Old master, before forking the new binary: a fresh page holding `state`.
  std::error_code create(OldMasterState state);
  // Old master: what it does now (no-op without a page).
  void publish(OldMasterState state) noexcept;
  // In the forked child about to exec: clears FD_CLOEXEC on the page and names it in kVariable.
  void pass_to_exec() const noexcept;
  // Old master, once the child is forked: the new binary has its own fd; workers forked later
  // need none.
  void drop_fd() noexcept { fd_.reset(); }
  // New master: maps the page named by kVariable (then unset; the fd is closed once mapped).
  // Returns whether there was one with this binary's magic and layout version.
  bool adopt();
  // New master: what the old master last published.
  [[nodiscard]] OldMasterState peer() const noexcept;
  // New master, as it hands the service back: says so to the old master (which it then rings).
  void announce_leaving() noexcept;
  // Old master: whether the new master of its last upgrade said it hands the service back.
  [[nodiscard]] bool new_master_leaving() const noexcept;
  // Old master, once the pid file and control socket are its own again.
  void acknowledge_hand_back() noexcept;
  // Old master, stopping itself when the new master rang: it takes nothing back.
  void decline_hand_back() noexcept;
  // New master: what its old master answered (unknown/leaving: nothing yet, or an older one).
  [[nodiscard]] NewMasterState hand_back_answer() const noexcept;
  void release() noexcept;

 private:
  std::error_code map(int fd);

  struct Page;

  event::UniqueFd fd_;  // kept by the old master only, for the next exec
  Page* page_ = nullptr;
  bool bad_magic_ = false;  // kBadMagicVariable
};

}  // namespace ferry::master
