// Descriptors inherited from whoever started ferry: closed at start, except the ones ferry is
// meant to get (stdio, systemd's LISTEN_FDS, what an old master passes in a binary upgrade).
#pragma once

namespace ferry::master {

// The environment variable naming every fd an old master passes to the new binary ("3;4;5").
inline constexpr const char* kPassedFdsVariable = "FERRY_PASSED_FDS";

// First thing in a master: closes every fd above stderr that is not systemd's (LISTEN_FDS for
// this pid), nor named by kPassedFdsVariable (then unset), FERRY_LISTEN_FDS or
// FERRY_UPGRADE_STATE_FD. Otherwise a descriptor left open without CLOEXEC by a shell, a
// supervisor or a test harness would live in every worker for as long as ferry runs.
void close_inherited_fds();

// In the forked child about to exec the new binary, after every fd to pass had its FD_CLOEXEC
// cleared: names those fds in kPassedFdsVariable, so the new master keeps exactly them.
void name_passed_fds();

}  // namespace ferry::master
