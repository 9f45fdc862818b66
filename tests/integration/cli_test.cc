// End-to-end tests of the command line of the real ferry binary: exit codes, messages,
// -t / -T / -q, usage on bad command lines.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <algorithm>

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/process.h"
#include "tests/support/shipped_configs.h"
#include "tests/support/sockets.h"

namespace ferry::test {
namespace {

const std::string kExample = source_root() + "/packaging/ferry.conf";

TEST(CliTest, VersionPrintsTheVersionAndExitsZero) {
  const Finished f = run_program({ferry_binary(), "-v"});
  EXPECT_EQ(f.exit_code, 0);
  EXPECT_EQ(f.out.rfind("ferry version ", 0), 0U) << f.out;
}

TEST(CliTest, VerboseVersionNamesTheLibraries) {
  const Finished f = run_program({ferry_binary(), "-V"});
  EXPECT_EQ(f.exit_code, 0);
  for (const char* what :
       {"ferry version ", "libconfig++", "spdlog", "fmt", "libsystemd", "built with:"}) {
    EXPECT_NE(f.out.find(what), std::string::npos) << what << " missing from:\n" << f.out;
  }
}

TEST(CliTest, HelpPrintsUsageAndExitsZero) {
  const Finished f = run_program({ferry_binary(), "-h"});
  EXPECT_EQ(f.exit_code, 0);
  EXPECT_NE(f.out.find("usage: ferry"), std::string::npos);
}

TEST(CliTest, BadCommandLinesExitTwoWithUsageOnStderr) {
  const std::vector<std::vector<std::string>> bad = {
      {"-x"}, {"-c"},           {"-s"}, {"-s", "restart"}, {"extra"}, {"-t", "-s", "reload"},
      {"-q"}, {"--frobnicate"},
  };
  for (const auto& args : bad) {
    std::vector<std::string> argv{ferry_binary()};
    argv.insert(argv.end(), args.begin(), args.end());
    const Finished f = run_program(argv);
    std::string joined;
    for (const auto& a : args) joined += a + ' ';
    EXPECT_EQ(f.exit_code, 2) << joined;
    EXPECT_NE(f.err.find("usage: ferry"), std::string::npos) << joined << ":\n" << f.err;
    EXPECT_TRUE(f.out.empty()) << joined;
  }
}

TEST(CliTest, TestOfTheShippedExampleSucceeds) {
  const Finished f = run_program({ferry_binary(), "-t", "-c", kExample});
  EXPECT_EQ(f.exit_code, 0) << f.err;
  EXPECT_NE(f.err.find("ferry: configuration file " + kExample + " test is successful"),
            std::string::npos)
      << f.err;
}

TEST(CliTest, QuietTestPrintsNothingOnSuccess) {
  const Finished f = run_program({ferry_binary(), "-tq", "-c", kExample});
  EXPECT_EQ(f.exit_code, 0);
  EXPECT_TRUE(f.err.empty()) << f.err;
  EXPECT_TRUE(f.out.empty()) << f.out;
}

TEST(CliTest, TestOfABrokenFileExitsOneNamingFileAndLine) {
  TempDir dir;
  const std::string conf =
      dir.write("bad.conf", "worker_connections = 10;\nlog = { level = \"loud\"; };\n");
  const Finished f = run_program({ferry_binary(), "-t", "-q", "-c", conf});
  EXPECT_EQ(f.exit_code, 1);
  EXPECT_NE(f.err.find(conf + ":2: log.level: \"loud\" is not one of"), std::string::npos) << f.err;
  EXPECT_NE(f.err.find("test failed"), std::string::npos);
}

TEST(CliTest, MissingFileExitsOne) {
  const Finished f = run_program({ferry_binary(), "-t", "-c", "/nonexistent/ferry.conf"});
  EXPECT_EQ(f.exit_code, 1);
  EXPECT_NE(f.err.find("/nonexistent/ferry.conf: cannot read the configuration file: No such file"),
            std::string::npos)
      << f.err;
}

TEST(CliTest, DumpFillsInDefaults) {
  TempDir dir;
  const std::string conf = dir.write("min.conf", "worker_connections = 100;\n");
  const Finished f = run_program({ferry_binary(), "-T", "-q", "-c", conf});
  ASSERT_EQ(f.exit_code, 0) << f.err;
  EXPECT_TRUE(f.err.empty()) << f.err;
  for (const char* line :
       {"worker_connections = 100;", "worker_shutdown_timeout = \"30s\";",
        "accept_mutex_delay = \"500ms\";", "pid_file = \"/run/ferry/ferry.pid\";"}) {
    EXPECT_NE(f.out.find(line), std::string::npos) << line << " missing from:\n" << f.out;
  }
}

// A proxy's `upstream = "host:port"` is printed as written, with the defaults of the upstream it
// makes in a comment (the passive checks it has: max_fails 1 within 10 s).
TEST(CliTest, DumpSaysTheInlineUpstreamsDefaults) {
  TempDir dir;
  const std::string conf = dir.write(
      "inline.conf",
      "proxies = ( { name = \"p\"; listen = \"127.0.0.1:1\"; upstream = \"127.0.0.1:2\"; } );\n");
  const Finished f = run_program({ferry_binary(), "-T", "-q", "-c", conf});
  ASSERT_EQ(f.exit_code, 0) << f.err;
  EXPECT_NE(f.out.find("# an upstream of that one server: balance = \"round_robin\"; "
                       "resolve_interval = \"30s\"; max_fails = 1; fail_timeout = \"10s\"; "
                       "no health_check\n"),
            std::string::npos)
      << f.out;
  EXPECT_NE(f.out.find("upstream = \"127.0.0.1:2\";"), std::string::npos) << f.out;
}

// For every valid configuration shipped: -T's output passes -t, and dumping it again gives the
// same text (the in-process Config equality is checked by the conf unit tests).
TEST(CliTest, DumpOfEveryShippedConfigTestsAndDumpsTheSame) {
  const auto files = shipped_valid_configs();
  ASSERT_GE(files.size(), 5U);
  TempDir dir;
  for (const std::string& file : files) {
    const Finished first = run_program({ferry_binary(), "-T", "-q", "-c", file});
    ASSERT_EQ(first.exit_code, 0) << file << ":\n" << first.err;
    const std::string again = dir.write("dumped.conf", first.out);
    const Finished test = run_program({ferry_binary(), "-t", "-c", again});
    EXPECT_EQ(test.exit_code, 0) << file << ":\n" << test.err;
    const Finished second = run_program({ferry_binary(), "-T", "-q", "-c", again});
    ASSERT_EQ(second.exit_code, 0) << second.err;
    EXPECT_EQ(second.out, first.out) << file;
  }
}

// -t opens and binds nothing: it succeeds while the configured address is held by someone else.
TEST(CliTest, TestBindsNothing) {
  const HeldPort held;
  TempDir dir;
  const std::string conf =
      dir.write("taken.conf",
                "proxies = ( { name = \"p\"; listen = \"127.0.0.1:" + std::to_string(held.port()) +
                    "\"; upstream = \"127.0.0.1:1\"; } );\n");
  const Finished f = run_program({ferry_binary(), "-t", "-c", conf});
  EXPECT_EQ(f.exit_code, 0) << f.err;
}

// `-s` with a file libconfig cannot parse: the error with its line, and the pid file it tried —
// the file's own pid_file line when that line can be read, else the default.
TEST(CliTest, SignalWithAnUnparsableFileNamesTheErrorAndThePidFileTried) {
  TempDir dir;
  const std::string pid_file = dir.path() + "/none.pid";
  const std::string with_line =
      dir.write("a.conf", "pid_file = \"" + pid_file + "\"; # here\nworker_processes = ;\n");
  Finished f = run_program({ferry_binary(), "-s", "reload", "-c", with_line});
  EXPECT_EQ(f.exit_code, 1);
  EXPECT_NE(f.err.find(with_line + ":2: "), std::string::npos) << f.err;
  EXPECT_NE(f.err.find("its pid_file line names " + pid_file), std::string::npos) << f.err;
  EXPECT_NE(f.err.find("no running master found: cannot open " + pid_file), std::string::npos)
      << f.err;

  const std::string without = dir.write("b.conf", "worker_processes = 1;\nlog = {\n");
  f = run_program({ferry_binary(), "-s", "quit", "-c", without});
  EXPECT_EQ(f.exit_code, 1);
  EXPECT_NE(f.err.find(without + ":3: "), std::string::npos) << f.err;
  EXPECT_NE(f.err.find("trying the default pid file /run/ferry/ferry.pid"), std::string::npos)
      << f.err;
}

// The spec: "when the file does not parse, it uses the pid_file setting if it can still be read".
TEST(CliTest, ReloadOfAnUnparsableFileReachesTheMasterWhichRejectsIt) {
  EchoServer backend;
  const std::string body = one_proxy_config(1, free_port(), backend.port());
  FerryInstance ferry(body);
  ASSERT_TRUE(ferry.start()) << ferry.log();
  ferry.rewrite(body + "bogus = { ;\n");
  // The line of "bogus", after the pid_file and log lines the instance writes before the body.
  const std::string written = read_file(ferry.conf());
  const auto line = 1 + std::count(written.begin(), written.begin() + written.find("bogus"), '\n');
  const Finished f = ferry.command("reload");
  EXPECT_EQ(f.exit_code, 1);
  EXPECT_NE(f.err.find(ferry.conf() + ":" + std::to_string(line) + ": "), std::string::npos)
      << f.err;
  EXPECT_NE(f.err.find("reload rejected"), std::string::npos) << f.err;
  ferry.rewrite(body);
  EXPECT_EQ(ferry.command("reload").exit_code, 0) << ferry.log();
}

}  // namespace
}  // namespace ferry::test
