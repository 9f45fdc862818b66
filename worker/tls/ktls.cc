// The kernel TLS probe: the ULP list the kernel publishes, then a real setsockopt(TCP_ULP) on a
// connected loopback socket, since the list names only the modules loaded so far.
#include "worker/tls/ktls.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace ferry::worker::tls {
namespace {

constexpr const char* kUlpList = "/proc/sys/net/ipv4/tcp_available_ulp";

struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

// setsockopt(TCP_ULP, "tls") on a connected loopback TCP socket: "" when the kernel takes it.
std::string try_tls_ulp() {
  const Fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (listener.fd < 0) return errno_text("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(listener.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener.fd, 1) != 0 ||
      ::getsockname(listener.fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return errno_text("loopback listener");
  }
  const Fd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (client.fd < 0) return errno_text("socket");
  if (::connect(client.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return errno_text("loopback connect");
  }
  const Fd accepted(::accept4(listener.fd, nullptr, nullptr, SOCK_CLOEXEC));
  if (accepted.fd < 0) return errno_text("loopback accept");
  // The ULP attaches only to an established socket (ENOTCONN otherwise).
  if (::setsockopt(client.fd, SOL_TCP, TCP_ULP, "tls", 3) != 0) {
    return errno_text("setsockopt(TCP_ULP, \"tls\")");
  }
  return "";
}

}  // namespace

bool ulp_list_has_tls(std::string_view list) {
  std::istringstream in{std::string(list)};
  std::string name;
  while (in >> name) {
    if (name == "tls") return true;
  }
  return false;
}

bool kernel_tls_available(std::string& why) {
  std::ifstream in(kUlpList);
  if (!in) {
    why = std::string("cannot read ") + kUlpList + " (a kernel without TCP upper-layer protocols)";
    return false;
  }
  std::string list;
  std::getline(in, list);
  // Not listed may only mean not loaded yet: the kernel loads the tls module for a process
  // with CAP_NET_ADMIN that asks for it, so the socket has the last word.
  const std::string refused = try_tls_ulp();
  if (refused.empty()) return true;
  why = ulp_list_has_tls(list) ? "the kernel lists the \"tls\" ULP but refuses it: " + refused
                               : "the kernel offers no \"tls\" ULP (" + std::string(kUlpList) +
                                     ": \"" + list + "\"; " + refused + "; load the tls module)";
  return false;
}

bool kernel_tls_usable() {
  static const bool usable = [] {
    std::string why;
    return kernel_tls_available(why);
  }();
  return usable;
}

}  // namespace ferry::worker::tls
