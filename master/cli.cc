// Command-line parsing: short options, bundled ("-tq") or separate, values attached ("-cFILE")
// or following ("-c FILE"); --help and --version as long aliases.
#include "master/cli.h"

#include <algorithm>
#include <array>
#include <string_view>

#include "ferry_version.h"

namespace ferry::master {
namespace {

constexpr std::array<std::string_view, 6> kSignals = {"reload", "reopen",  "quit",
                                                      "stop",   "upgrade", "status"};

}  // namespace

std::string usage() {
  return "usage: ferry [-c FILE] [-t | -T] [-q] [-s SIGNAL] [-v | -V] [-h]\n"
         "       ferry [-c FILE] ctl COMMAND...\n"
         "\n"
         "  -c FILE    configuration file (default: " FERRY_DEFAULT_CONF
         ")\n"
         "  -t         test the configuration and exit\n"
         "  -T         test the configuration, print the effective configuration, and exit\n"
         "  -q         with -t or -T: print errors only\n"
         "  -s SIGNAL  send SIGNAL to the running master: reload, reopen, quit, stop, upgrade;\n"
         "             -s status prints its live statistics\n"
         "  -v         print the version and exit\n"
         "  -V         print the version, build options and library versions, and exit\n"
         "  -h         print this help and exit\n"
         "\n"
         "  ctl COMMAND  run a command on the running master's servers and sessions (ferry(8)):\n"
         "             show servers [UPSTREAM] [--json]\n"
         "             set server UPSTREAM/SERVER state ready|drain|maint [--kill]\n"
         "             set server UPSTREAM/SERVER weight N\n"
         "             add server UPSTREAM/ADDRESS [weight N] [backup] [slow_start DURATION]\n"
         "             del server UPSTREAM/SERVER\n"
         "             kill sessions UPSTREAM/SERVER\n"
         "             show sessions [proxy NAME] [server UPSTREAM/SERVER] [client ADDRESS] "
         "[--json]\n"
         "             kill session ID | kill sessions client ADDRESS\n"
         "\n"
         "Without -t, -T, -s, ctl, -v, -V or -h, ferry runs in the foreground.\n";
}

std::variant<CommandLine, std::string> parse_command_line(std::span<const char* const> args,
                                                          const std::string& default_conf) {
  CommandLine cl;
  cl.conf_file = default_conf;
  bool test = false;
  bool dump = false;
  bool version = false;
  bool verbose = false;
  bool help = false;
  bool signal = false;
  bool ctl = false;

  for (std::size_t i = 1; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (arg == "--help") {
      help = true;
      continue;
    }
    if (arg == "--version") {
      version = true;
      continue;
    }
    if (arg == "ctl") {
      // The rest is the command, words as given (they may start with '-': --json, --kill).
      for (std::size_t k = i + 1; k < args.size(); ++k) cl.ctl.emplace_back(args[k]);
      if (cl.ctl.empty()) return "ctl needs a command (show servers, set server, ...)";
      ctl = true;
      break;
    }
    if (arg.size() < 2 || arg[0] != '-' || arg[1] == '-') {
      return "unexpected argument \"" + std::string(arg) + "\"";
    }
    for (std::size_t k = 1; k < arg.size(); ++k) {
      const char opt = arg[k];
      switch (opt) {
        case 't': test = true; break;
        case 'T': dump = true; break;
        case 'q': cl.quiet = true; break;
        case 'v': version = true; break;
        case 'V': verbose = true; break;
        case 'h': help = true; break;
        case 'c':
        case 's': {
          // The value is the rest of this argument, or the next argument.
          std::string value;
          if (k + 1 < arg.size()) {
            value = std::string(arg.substr(k + 1));
          } else if (i + 1 < args.size()) {
            value = args[++i];
          } else {
            return std::string("option -") + opt + " needs a value";
          }
          if (value.empty()) return std::string("option -") + opt + " needs a value";
          if (opt == 'c') {
            cl.conf_file = value;
          } else {
            if (std::find(kSignals.begin(), kSignals.end(), value) == kSignals.end()) {
              return "invalid signal \"" + value +
                     "\" for -s (use reload, reopen, quit, stop, upgrade or status)";
            }
            cl.signal = value;
            signal = true;
          }
          k = arg.size();  // the value used up the rest of the argument
          break;
        }
        default: return std::string("invalid option -") + opt;
      }
    }
  }

  if (help) {
    cl.action = Action::help;
  } else if (verbose) {
    cl.action = Action::version_verbose;
  } else if (version) {
    cl.action = Action::version;
  } else if (ctl) {
    if (test || dump || signal) return "ctl cannot be combined with -t, -T or -s";
    cl.action = Action::ctl;
  } else if (signal) {
    if (test || dump) return "-s cannot be combined with -t or -T";
    cl.action = Action::signal;
  } else if (dump) {
    cl.action = Action::dump;
  } else if (test) {
    cl.action = Action::test;
  } else if (cl.quiet) {
    return "-q is only meaningful with -t or -T";
  }
  return cl;
}

}  // namespace ferry::master
