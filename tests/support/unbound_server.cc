// UnboundServer: the configuration written into a temporary folder, unbound run in the
// foreground as the test's child, readiness and changes through unbound-control.
#include "tests/support/unbound_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <stdexcept>

namespace ferry::test {
namespace {

// Whether `ip`:53 is free for both UDP and TCP (unbound takes both).
bool port_53_free(in_addr ip) {
  for (const int type : {SOCK_DGRAM, SOCK_STREAM}) {
    const int fd = ::socket(AF_INET, type | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(53);
    sin.sin_addr = ip;
    const int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin);
    const int err = errno;
    ::close(fd);
    if (rc != 0) {
      if (err != EADDRINUSE) throw std::runtime_error(std::string("bind: ") + std::strerror(err));
      return false;
    }
  }
  return true;
}

// A random address in 127/8 away from 127.0.0.x (where the backends live) with port 53 free.
std::string random_loopback() {
  std::random_device seed;
  std::mt19937 rng(seed());
  for (int attempt = 0; attempt < 20; ++attempt) {
    in_addr ip{};
    ip.s_addr =
        htonl(0x7f000000U | (1 + rng() % 254) << 16 | (rng() % 256) << 8 | (1 + rng() % 254));
    if (!port_53_free(ip)) continue;
    char text[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &ip, text, sizeof text);
    return text;
  }
  throw std::runtime_error("UnboundServer: no free 127.x.y.z:53 in 20 tries");
}

}  // namespace

UnboundServer::UnboundServer(const std::string& zone, const std::vector<std::string>& records) {
  if (::access(kUnbound, X_OK) != 0 || ::access(kControl, X_OK) != 0) {
    throw std::runtime_error(std::string("unbound is not installed (") + kUnbound + ", " +
                             kControl +
                             "): packaging/install-deps installs it (Debian package \"unbound\")");
  }
  address_ = random_loopback();
  std::string text =
      "server:\n"
      "  interface: " +
      address_ +
      "\n"
      "  port: 53\n"
      "  do-daemonize: no\n"
      "  username: \"\"\n"
      "  chroot: \"\"\n"
      "  directory: \"" +
      dir_.path() +
      "\"\n"
      "  pidfile: \"" +
      dir_.path() +
      "/unbound.pid\"\n"
      "  use-syslog: no\n"
      "  logfile: \"\"\n"
      "  verbosity: 0\n"
      "  do-ip6: no\n"
      "  num-threads: 1\n"
      "  access-control: 127.0.0.0/8 allow\n"
      "  do-not-query-localhost: no\n"
      "  module-config: \"iterator\"\n"
      "  local-zone: \"" +
      zone + ".\" static\n";
  for (const std::string& r : records) text += "  local-data: \"" + r + "\"\n";
  text +=
      "remote-control:\n"
      "  control-enable: yes\n"
      "  control-interface: \"" +
      dir_.path() + "/unbound.ctl\"\n";
  conf_ = dir_.write("unbound.conf", text);
  process_ = std::make_unique<Process>(std::vector<std::string>{kUnbound, "-d", "-c", conf_});
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    const Finished f = run_program({kControl, "-c", conf_, "status"}, std::chrono::seconds(5));
    if (f.exit_code == 0) return;
    if (!alive(process_->pid()) || std::chrono::steady_clock::now() >= deadline) {
      process_->signal(SIGTERM);
      const Finished gone = process_->wait(std::chrono::seconds(5));
      throw std::runtime_error("unbound did not come up on " + address_ + ": " + gone.err +
                               " (unbound-control status: " + f.out + f.err + ")");
    }
    ::usleep(50'000);
  }
}

UnboundServer::~UnboundServer() {
  if (process_) {
    process_->signal(SIGTERM);
    process_->wait(std::chrono::seconds(5));  // SIGKILL after that
  }
}

void UnboundServer::control(const std::vector<std::string>& args) {
  std::vector<std::string> argv{kControl, "-c", conf_};
  argv.insert(argv.end(), args.begin(), args.end());
  const Finished f = run_program(argv, std::chrono::seconds(5));
  if (f.exit_code != 0 || f.out.find("ok") == std::string::npos) {
    throw std::runtime_error("unbound-control " + args.front() + " failed (exit " +
                             std::to_string(f.exit_code) + "): " + f.out + f.err);
  }
}

void UnboundServer::set(const std::string& name, const std::vector<std::string>& records) {
  control({"local_data_remove", name});
  for (const std::string& r : records) control({"local_data", r});
}

std::string UnboundServer::resolv_conf() const {
  return "nameserver " + address_ + "\noptions timeout:1 attempts:1\n";
}

std::string UnboundServer::log() {
  process_->drain();
  return process_->stderr_so_far();
}

}  // namespace ferry::test
