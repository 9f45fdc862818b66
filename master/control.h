// The control socket's client side, `ferry -s`, and where the socket is: a unix stream socket
// beside the pid file ("ferry.pid" → "ferry.ctl"). What is said on it: control_protocol.h.
#pragma once

#include <string>
#include <vector>

namespace ferry::master {

std::string control_socket_path(const std::string& pid_file);

// `ferry -s SIGNAL`: finds the master through the pid file and signals it; for reload, waits
// for the verdict on the control socket (30 s at most); for upgrade, asks the master on the
// control socket to start the new binary, keeps that connection (the old master says there if
// the new one exits), waits until the new master serves (30 s at most) and sends QUIT to the
// old one; for reopen, signals the old master of an upgrade under way too. Returns the exit
// status and prints what happened to stderr.
int send_signal_command(const std::string& signal, const std::string& conf_file);

// `ferry ctl WORDS...`: sends the words as one command line to the running master and prints
// its answer (stdout) or error (stderr). Returns 0 when the master did it, 1 otherwise.
int send_ctl_command(const std::vector<std::string>& words, const std::string& conf_file);

// `-s upgrade`'s exit status when no master took the request: none runs, it does not answer, or
// it is an older ferry that does not know `upgrade`. Only then is a restart the way to the new
// binary (the Debian postinst's fallback); on 1 the old master stays in charge and serves.
inline constexpr int kUpgradeNotTaken = 3;
// `-s upgrade`'s exit status when the master is busy with another upgrade (or the end of one:
// an old master still draining, a new one handing the service back) or reading the file for a
// reload: nothing was done and the running master serves; ask again later.
inline constexpr int kUpgradeBusy = 4;

}  // namespace ferry::master
