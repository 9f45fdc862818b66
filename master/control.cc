// `ferry -s`: pid file lookup, kill(2) for reopen/quit/stop, the control socket for reload.
#include "master/control.h"
#include "master/control_protocol.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>

#include <fmt/format.h>

#include "conf/loader.h"
#include "event/syscall_util.h"
#include "master/console.h"
#include "master/pid_file.h"

namespace ferry::master {
namespace {

// How long `-s` waits for the master's control socket to take a connection and a request line
// (a live master does in milliseconds; the answers have their own limits).
constexpr std::chrono::seconds kConnectLimit{5};

// The pid file `-s` uses and, when the configuration does not load, its errors and where the
// path came from: said when no master is found there.
struct PidFileChoice {
  std::string path;
  std::string notes;
};

// The pid file of the configuration; when the file does not load, the pid_file setting if it
// can still be read, else the default — so that a broken configuration still reaches the master
// (which then rejects it and says why). No name is resolved: a silent DNS server must not hold
// up `-s` (the master resolves them on its reload).
PidFileChoice find_pid_file(const std::string& conf_file) {
  const conf::LoadResult r = conf::load_file(conf_file, conf::HostNames::unresolved);
  if (r.config) return {r.config->pid_file, ""};
  std::string notes;
  for (const auto& e : r.errors) notes += e.to_string() + "\n";
  if (auto setting = conf::read_pid_file_setting(conf_file)) {
    return {*setting, notes + fmt::format("ferry: {} does not load; its pid_file line names {}",
                                          conf_file, *setting)};
  }
  const std::string fallback = conf::Config{}.pid_file;
  return {fallback, notes + fmt::format("ferry: {} does not load and no pid_file line could be "
                                        "read in it; trying the default pid file {}",
                                        conf_file, fallback)};
}

// Connects to the control socket beside the pid file and checks, with SO_PEERCRED (set when the
// master called listen, known without its accept), who listens there: the very process the pid
// file names, running as root or as the file's owner. The file alone is not trusted (a master of
// another user writes it as that user, and anyone may plant one in a shared folder); the socket
// check keeps a planted or stale pid file from making `-s` signal an unrelated process.
event::UniqueFd connect_master(const std::string& pid_file, PidFileEntry& master,
                               bool quiet = false) {
  const std::string path = control_socket_path(pid_file);
  const auto fail = [&](const std::string& why) {
    if (!quiet) print_error(why);
    return event::UniqueFd{};
  };
  // Non-blocking: a blocking connect waits as long as the backlog stays full (a master that no
  // longer accepts), a send as long as its buffer does.
  event::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
  const auto deadline = std::chrono::steady_clock::now() + kConnectLimit;
  int rc = -1;
  while (fd && (rc = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun)) == -1 &&
         (errno == EAGAIN || errno == EINTR) && std::chrono::steady_clock::now() < deadline) {
    ::poll(nullptr, 0, 10);  // a unix socket's full backlog says nothing when it has room
  }
  if (rc == -1) {
    return fail(fmt::format(
        "ferry: the master (pid {} from {}) does not answer on {}: {}", master.pid, pid_file, path,
        errno == EAGAIN ? fmt::format("no room in its backlog within {} s", kConnectLimit.count())
                        : std::string(std::strerror(errno))));
  }
  ucred peer{};
  socklen_t len = sizeof peer;
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &peer, &len) == -1) {
    return fail(
        fmt::format("ferry: getsockopt(SO_PEERCRED) on {} failed: {}", path, std::strerror(errno)));
  }
  if (peer.pid != master.pid) {
    // The pid file may have changed hands since it was read (a binary upgrade's masters hand
    // it over): read again, the master that listens is the one it names now, or none.
    std::string ignored;
    if (const auto now = read_pid_file(pid_file, ignored); now && now->pid == peer.pid) {
      master = *now;
    }
  }
  if (peer.pid != master.pid) {
    return fail(
        fmt::format("ferry: {} names pid {}, but pid {} listens on {}: a stale or "
                    "planted pid file; refusing it",
                    pid_file, master.pid, peer.pid, path));
  }
  if (peer.uid != 0 && peer.uid != master.owner) {
    return fail(
        fmt::format("ferry: the master (pid {}) runs as uid {}, but {} belongs to uid {}; "
                    "refusing it",
                    master.pid, peer.uid, pid_file, master.owner));
  }
  return fd;
}

// Sends `request` on the master's control socket and returns the connected socket, or an
// invalid one (with the reason printed when `quiet` is false).
event::UniqueFd send_request(const std::string& pid_file, PidFileEntry& master,
                             std::string_view request, bool quiet = false) {
  event::UniqueFd fd = connect_master(pid_file, master, quiet);
  if (!fd) return {};
  pollfd p{fd.get(), POLLOUT, 0};
  const int ready = ::poll(&p, 1, static_cast<int>(kConnectLimit.count() * 1000));
  // The answers are read after poll; the upgrade's drain reads to the master's close.
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (ready != 1 ||
      ::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) !=
          static_cast<ssize_t>(request.size()) ||
      flags == -1 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) == -1) {
    if (!quiet) {
      print_error(fmt::format("ferry: cannot send to {}: {}", control_socket_path(pid_file),
                              ready == 0
                                  ? "no room within " + std::to_string(kConnectLimit.count()) + " s"
                                  : std::string(std::strerror(errno))));
    }
    return {};
  }
  return fd;
}

// Whether the master at the pid file serves (its first workers ready, no reload pending).
bool master_ready(const std::string& pid_file, PidFileEntry master) {
  event::UniqueFd fd = send_request(pid_file, master, protocol::kReady, true);
  if (!fd) return false;
  pollfd p{fd.get(), POLLIN, 0};
  if (::poll(&p, 1, 1000) <= 0) return false;
  char buf[8];
  const ssize_t n = event::retry_eintr([&] { return ::read(fd.get(), buf, sizeof buf); });
  return n > 0 && std::string_view(buf, static_cast<std::size_t>(n)).starts_with(protocol::kOk);
}

// The parent of `pid` from /proc/PID/stat ("PID (COMM) STATE PPID ..."; COMM may hold spaces and
// parentheses, so the fields are counted after its last ')'), or 0 when it cannot be read.
pid_t parent_of(pid_t pid) {
  const event::UniqueFd fd(
      ::open(fmt::format("/proc/{}/stat", pid).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return 0;
  char buf[1024];
  const ssize_t n = event::retry_eintr([&] { return ::read(fd.get(), buf, sizeof buf - 1); });
  if (n <= 0) return 0;
  const std::string_view stat(buf, static_cast<std::size_t>(n));
  const std::size_t close = stat.rfind(')');
  if (close == std::string_view::npos || close + 4 >= stat.size()) return 0;
  // ") S PPID ..."
  return static_cast<pid_t>(std::strtol(stat.data() + close + 4, nullptr, 10));
}

// Reads what the master answered on an upgrade's connection (it closes when done).
std::string read_upgrade_answer(int fd) {
  std::string answer;
  char buf[4096];
  ssize_t n;
  while ((n = event::retry_eintr([&] { return ::read(fd, buf, sizeof buf); })) > 0) {
    answer.append(buf, static_cast<std::size_t>(n));
  }
  return answer;
}

// The exit status for the old master's answer on an upgrade's connection, printed.
int upgrade_answered(const std::string& answer, pid_t old_master) {
  // An older master answers a request it does not know this way: it cannot upgrade.
  if (answer == protocol::error_answer(protocol::kUnknownRequest)) {
    print_error(
        fmt::format("ferry: the master (pid {}) is an older ferry that does not know `upgrade`; "
                    "restart it to run the new binary",
                    old_master));
    return kUpgradeNotTaken;
  }
  if (answer.starts_with(protocol::kBusy)) {
    print_error(answer.substr(protocol::kBusy.size()));
    print_error(fmt::format(
        "ferry: nothing was done; the master (pid {}) keeps serving: ask again later", old_master));
    return kUpgradeBusy;
  }
  print_error(answer.starts_with(protocol::kError)
                  ? answer.substr(protocol::kError.size())
                  : "ferry: the master closed the control connection during the upgrade");
  return 1;
}

// Whether `pid` is a ferry master (its process title says so in /proc/PID/comm).
bool is_ferry_master(pid_t pid) {
  const event::UniqueFd fd(
      ::open(fmt::format("/proc/{}/comm", pid).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return false;
  char buf[32];
  const ssize_t n = event::retry_eintr([&] { return ::read(fd.get(), buf, sizeof buf); });
  return n > 0 && std::string_view(buf, static_cast<std::size_t>(n)).starts_with("ferry: master");
}

// No master answered at the pid file: during a rolled-back upgrade's hand-back (the new master
// stopping, the old one taking its pid file back) that is a moment, not an absent service. Says
// whether PIDFILE.oldbin names a live ferry master — the parent of `current`, if given.
bool upgrade_hand_back_under_way(const std::string& pid_file, pid_t current) {
  std::string why;
  const auto old = read_pid_file(pid_file + std::string(".oldbin"), why);
  if (!old || ::kill(old->pid, 0) == -1 || !is_ferry_master(old->pid)) return false;
  // Runs as root or as the file's owner (a process may name itself anything).
  struct stat st {};
  if (::stat(fmt::format("/proc/{}", old->pid).c_str(), &st) == -1 ||
      (st.st_uid != 0 && st.st_uid != old->owner)) {
    return false;
  }
  if (current > 0 && parent_of(current) != old->pid) return false;
  print_error(fmt::format(
      "ferry: the old master (pid {}) of an upgrade is handing the service over or taking it "
      "back; nothing was done: ask again later",
      old->pid));
  return true;
}

// How long `-s upgrade` waits for the new master to serve: 30 s, or (tests only) the
// milliseconds in FERRY_TEST_UPGRADE_WAIT_MS.
std::chrono::milliseconds upgrade_wait() {
  const char* value = std::getenv("FERRY_TEST_UPGRADE_WAIT_MS");
  const long ms = value != nullptr ? std::strtol(value, nullptr, 10) : 0;
  return ms > 0 ? std::chrono::milliseconds(ms) : std::chrono::seconds(30);
}

// Binary upgrade in one command: asks the running master to start the new binary (as USR2
// does) and keeps that connection, on which the old master says if the new one exits; waits
// until the new master serves, then sends QUIT to the old one. When the new master does not
// serve within 30 s, the old master is asked to stop it ("abort") and stays in charge.
int upgrade(const std::string& pid_file, PidFileEntry old_entry) {
  // Quiet: a hand-over under way is said as such, not as a stale pid file.
  event::UniqueFd old_conn = send_request(pid_file, old_entry, protocol::kUpgrade, true);
  // (The pid file may have changed hands before the request went: whoever took it is asked.)
  const pid_t old_master = old_entry.pid;
  if (!old_conn) {
    if (upgrade_hand_back_under_way(pid_file, old_master)) return kUpgradeBusy;
    if (connect_master(pid_file, old_entry)) {  // prints why, if it still fails
      // It answers now: not a service without a master (3 restarts it), a request that failed.
      print_error(fmt::format(
          "ferry: the upgrade request did not reach the master (pid {}); try again", old_master));
      return 1;
    }
    return kUpgradeNotTaken;
  }
  const auto deadline = std::chrono::steady_clock::now() + upgrade_wait();
  for (;;) {
    pollfd p{old_conn.get(), POLLIN, 0};
    // Last: an answer that came while the pid file was read below is not left unread.
    if (::poll(&p, 1, 50) > 0)
      return upgrade_answered(read_upgrade_answer(old_conn.get()), old_master);
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::string why;
    const auto current = read_pid_file(pid_file, why);
    if (current && current->pid != old_master && master_ready(pid_file, *current)) {
      if (::kill(old_master, SIGQUIT) == -1) {
        print_error(
            fmt::format("ferry: the new master (pid {}) serves, but kill({}, QUIT) failed: {}",
                        current->pid, old_master, std::strerror(errno)));
        return 1;
      }
      std::fprintf(stderr,
                   "ferry: upgraded: new master pid %d serves; old master pid %d is leaving\n",
                   current->pid, old_master);
      return 0;
    }
  }
  // An answer may have come since the last poll (the new master exited, the old one took its
  // pid file back): read before the pid file is taken for "never acted".
  {
    pollfd p{old_conn.get(), POLLIN, 0};
    if (::poll(&p, 1, 200) > 0) {
      return upgrade_answered(read_upgrade_answer(old_conn.get()), old_master);
    }
  }
  // The master renames its pid file as it starts the new binary: one that still names it took
  // the request in (the kernel did) but never acted on it.
  std::string why;
  const auto current = read_pid_file(pid_file, why);
  if (current && current->pid == old_master) {
    // Or it did, and has just taken the service back: its answer follows the pid file at once.
    pollfd p{old_conn.get(), POLLIN, 0};
    if (::poll(&p, 1, 1000) > 0) {
      return upgrade_answered(read_upgrade_answer(old_conn.get()), old_master);
    }
    print_error(
        fmt::format("ferry: the master (pid {}) did not act on the upgrade request within "
                    "30 s: it does not answer",
                    old_master));
    return kUpgradeNotTaken;
  }
  // The docs promise the old master stays in charge: the new one is told to go (it hands the
  // service back as it leaves), and the old master answers once it has the service again.
  print_error(fmt::format(
      "ferry: the new master did not serve within 30 s; asking the old master (pid {}) to stop it",
      old_master));
  if (::send(old_conn.get(), protocol::kAbort.data(), protocol::kAbort.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(protocol::kAbort.size())) {
    print_error(fmt::format("ferry: cannot send to the old master (pid {}): {}", old_master,
                            std::strerror(errno)));
    return 1;
  }
  pollfd p{old_conn.get(), POLLIN, 0};
  if (::poll(&p, 1, 15'000) > 0) {
    (void)upgrade_answered(read_upgrade_answer(old_conn.get()), old_master);
    return 1;
  }
  // An older master does not know "abort": the new master, proven on its control socket and as
  // the old master's child, is told to QUIT here (it hands the service back as it leaves).
  auto fresh = read_pid_file(pid_file, why);
  // Checked after the connect, which follows the pid file if it changed hands meanwhile.
  if (fresh && connect_master(pid_file, *fresh, true) && fresh->pid != old_master &&
      parent_of(fresh->pid) == old_master && ::kill(fresh->pid, SIGQUIT) == 0) {
    print_error(fmt::format(
        "ferry: the old master (pid {}) did not answer the abort; told the new master (pid {}) "
        "to QUIT: the old master stays in charge",
        old_master, fresh->pid));
    return 1;
  }
  print_error(fmt::format(
      "ferry: the old master (pid {}) did not say within 15 s that it is in charge again; see "
      "the log (QUIT the new master to roll back)",
      old_master));
  return 1;
}

// `-s reopen` during a binary upgrade: the old master (its pid file is PIDFILE.oldbin, as
// upgrade.cc renames it) still writes its logs, and its workers too until WINCH, so
// logrotate's postrotate must reach it as well. It is trusted as the parent of the master that
// just proved itself on the control socket (the old master forks the new one).
int reopen_old_master(const std::string& pid_file, pid_t master) {
  const std::string oldbin = pid_file + ".oldbin";
  std::string why;
  const auto old = read_pid_file(oldbin, why);
  if (!old) return 0;  // no upgrade under way
  if (parent_of(master) != old->pid) {
    print_error(
        fmt::format("ferry: {} names pid {}, not the parent of the master (pid {}): "
                    "a stale file; not signalled",
                    oldbin, old->pid, master));
    return 0;
  }
  if (::kill(old->pid, SIGUSR1) == -1) {
    print_error(fmt::format("ferry: kill({}, USR1) to the old master of the upgrade failed: {}",
                            old->pid, std::strerror(errno)));
    return 1;
  }
  return 0;
}

// Reads the master's whole answer (it closes when done); nullopt, with the reason printed,
// when it did not come within `limit`.
std::optional<std::string> read_answer(int fd, pid_t pid, std::chrono::seconds limit) {
  std::string answer;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      print_error(
          fmt::format("ferry: no answer from the master (pid {}) within {} s", pid, limit.count()));
      return std::nullopt;
    }
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[16384];
    const ssize_t n = event::retry_eintr([&] { return ::read(fd, buf, sizeof buf); });
    if (n <= 0) return answer;
    answer.append(buf, static_cast<std::size_t>(n));
  }
}

int reload(const std::string& pid_file, PidFileEntry master) {
  event::UniqueFd fd = send_request(pid_file, master, protocol::kReload);
  if (!fd) return 1;
  const auto answer = read_answer(fd.get(), master.pid, std::chrono::seconds(30));
  if (!answer) return 1;
  if (answer->starts_with(protocol::kOk)) return 0;
  if (answer->starts_with(protocol::kError)) {
    print_error(answer->substr(protocol::kError.size()));
    print_error("ferry: reload rejected; the master keeps the previous configuration");
    return 1;
  }
  print_error("ferry: the master closed the control connection without a verdict");
  return 1;
}

// `-s status`: the master answers "ok LENGTH\n" and its statistics table, then closes.
int status(const std::string& pid_file, PidFileEntry master) {
  event::UniqueFd fd = send_request(pid_file, master, protocol::kStatus);
  if (!fd) return 1;
  const auto answer = read_answer(fd.get(), master.pid, std::chrono::seconds(10));
  if (!answer) return 1;
  if (answer->rfind("ok ", 0) != 0) {
    print_error(answer->starts_with(protocol::kError) ? answer->substr(protocol::kError.size())
                                                      : "ferry: the master sent no statistics");
    return 1;
  }
  const std::size_t eol = answer->find('\n');
  const std::size_t length = std::strtoull(answer->c_str() + 3, nullptr, 10);
  if (eol == std::string::npos || answer->size() - eol - 1 != length) {
    print_error(fmt::format("ferry: the master's statistics arrived cut short ({} of {} bytes)",
                            eol == std::string::npos ? 0 : answer->size() - eol - 1, length));
    return 1;
  }
  std::fwrite(answer->data() + eol + 1, 1, length, stdout);
  std::fflush(stdout);
  return 0;
}

// During a hand-over (between USR2's rename of the pid file and the new master's write of its
// own, or while a rolled-back new master's socket is closed and the old master has not taken
// its files back yet) the old master still writes its logs: reached through PIDFILE.oldbin,
// proven on the control socket it holds. Says whether it was signalled.
bool reopen_through_oldbin(const std::string& pid_file) {
  std::string ignored;
  auto old = read_pid_file(pid_file + std::string(".oldbin"), ignored);
  if (!old || !connect_master(pid_file, *old, true)) return false;
  if (::kill(old->pid, SIGUSR1) == 0) return true;
  print_error(fmt::format("ferry: kill({}, USR1) failed: {}", old->pid, std::strerror(errno)));
  return false;
}

int sig_of(const std::string& command) {
  return command == "reopen" ? SIGUSR1 : command == "quit" ? SIGQUIT : SIGTERM;
}

}  // namespace

std::string control_socket_path(const std::string& pid_file) {
  constexpr std::string_view kSuffix = ".pid";
  if (pid_file.size() > kSuffix.size() &&
      pid_file.compare(pid_file.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0) {
    return pid_file.substr(0, pid_file.size() - kSuffix.size()) + ".ctl";
  }
  return pid_file + ".ctl";
}

int send_ctl_command(const std::vector<std::string>& words, const std::string& conf_file) {
  std::string line;
  for (const std::string& w : words) {
    if (w.find_first_of(" \t\n") != std::string::npos) {
      print_error(fmt::format("ferry: ctl: \"{}\": a word may not hold a space or a new line", w));
      return 1;
    }
    line += (line.empty() ? "" : " ") + w;
  }
  line += '\n';
  const PidFileChoice choice = find_pid_file(conf_file);
  std::string why;
  auto master = read_pid_file(choice.path, why);
  if (!master) {
    if (!choice.notes.empty()) print_error(choice.notes);
    print_error(fmt::format("ferry: no running master found: {}", why));
    return 1;
  }
  event::UniqueFd fd = send_request(choice.path, *master, line);
  if (!fd) return 1;
  const auto answer = read_answer(fd.get(), master->pid, std::chrono::seconds(10));
  if (!answer) return 1;
  if (answer->starts_with(protocol::kError)) {
    print_error(answer->substr(protocol::kError.size()));
    return 1;
  }
  std::string_view body;
  if (answer->rfind("ok ", 0) == 0) {  // "ok LENGTH\n" and a whole text
    const std::size_t eol = answer->find('\n');
    const std::size_t length = std::strtoull(answer->c_str() + 3, nullptr, 10);
    if (eol == std::string::npos || answer->size() - eol - 1 != length) {
      print_error("ferry: the master's answer arrived cut short");
      return 1;
    }
    body = std::string_view(*answer).substr(eol + 1);
  } else if (answer->starts_with(protocol::kOk)) {
    body = std::string_view(*answer).substr(protocol::kOk.size());
  } else {
    print_error(answer->empty() ? "ferry: the master closed the connection without an answer"
                                : "ferry: the master's answer makes no sense: " + *answer);
    return 1;
  }
  std::fwrite(body.data(), 1, body.size(), stdout);
  std::fflush(stdout);
  return 0;
}

int send_signal_command(const std::string& signal, const std::string& conf_file) {
  const PidFileChoice choice = find_pid_file(conf_file);
  const std::string& pid_file = choice.path;
  std::string why;
  auto master = read_pid_file(pid_file, why);
  if (master && ::kill(master->pid, 0) == -1) {
    if (errno == EPERM) {
      print_error(
          fmt::format("ferry: the master (pid {} from {}) runs as another user: only "
                      "root or that user may control it",
                      master->pid, pid_file));
      return 1;
    }
    why = fmt::format("process {} from {}: {}", master->pid, pid_file, std::strerror(errno));
    master.reset();
  }
  if (!master && signal == "reopen" && reopen_through_oldbin(pid_file)) return 0;
  if (!master && signal == "upgrade" && upgrade_hand_back_under_way(pid_file, 0)) {
    return kUpgradeBusy;
  }
  if (!master) {
    if (!choice.notes.empty()) print_error(choice.notes);
    print_error(fmt::format("ferry: no running master found: {}", why));
    return signal == "upgrade" ? kUpgradeNotTaken : 1;
  }
  if (signal == "reload") return reload(pid_file, *master);
  if (signal == "upgrade") return upgrade(pid_file, *master);
  if (signal == "status") return status(pid_file, *master);
  // Signalled only once its control socket proved the pid is the master's; the connection is
  // closed unused (the master need not accept it for SO_PEERCRED to tell).
  if (!connect_master(pid_file, *master, true)) {
    if (sig_of(signal) == SIGUSR1 && reopen_through_oldbin(pid_file)) return 0;
    (void)connect_master(pid_file, *master);  // prints why
    return 1;
  }
  const int sig = sig_of(signal);
  if (::kill(master->pid, sig) == -1) {
    print_error(fmt::format("ferry: kill({}, {}) failed: {}", master->pid, sigabbrev_np(sig),
                            std::strerror(errno)));
    return 1;
  }
  return sig == SIGUSR1 ? reopen_old_master(pid_file, master->pid) : 0;
}

}  // namespace ferry::master
