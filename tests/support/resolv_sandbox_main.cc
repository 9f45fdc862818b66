// resolv_sandbox RESOLV_CONF HOSTS NSSWITCH PROGRAM [ARG...]: runs PROGRAM in a private mount
// namespace where those three files are bind-mounted over /etc's, so a test decides what
// getaddrinfo answers without touching the machine's resolver (tests run as root).
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: resolv_sandbox RESOLV_CONF HOSTS NSSWITCH PROGRAM [ARG...]\n");
    return 64;
  }
  if (::unshare(CLONE_NEWNS) != 0) {
    std::fprintf(stderr, "resolv_sandbox: unshare(CLONE_NEWNS): %s\n", std::strerror(errno));
    return 71;
  }
  // Private first, or the bind mounts would propagate back to the machine's namespace.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    std::fprintf(stderr, "resolv_sandbox: making / private: %s\n", std::strerror(errno));
    return 71;
  }
  const char* targets[] = {"/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf"};
  for (int i = 0; i < 3; ++i) {
    if (::mount(argv[i + 1], targets[i], nullptr, MS_BIND, nullptr) != 0) {
      std::fprintf(stderr, "resolv_sandbox: bind-mounting %s over %s: %s\n", argv[i + 1],
                   targets[i], std::strerror(errno));
      return 71;
    }
  }
  ::execvp(argv[4], argv + 4);
  std::fprintf(stderr, "resolv_sandbox: exec %s: %s\n", argv[4], std::strerror(errno));
  return 127;
}
