// Tests of master/cli: what each command line means, and which ones are refused.
#include "master/cli.h"

#include <initializer_list>
#include <vector>

#include <gtest/gtest.h>

namespace ferry::master {
namespace {

std::variant<CommandLine, std::string> parse(std::initializer_list<const char*> args) {
  std::vector<const char*> argv{"ferry"};
  argv.insert(argv.end(), args);
  return parse_command_line(argv, "/etc/ferry/ferry.conf");
}

CommandLine ok(std::initializer_list<const char*> args) {
  auto r = parse(args);
  if (auto* why = std::get_if<std::string>(&r)) ADD_FAILURE() << *why;
  return std::holds_alternative<CommandLine>(r) ? std::get<CommandLine>(r) : CommandLine{};
}

std::string refused(std::initializer_list<const char*> args) {
  auto r = parse(args);
  if (std::holds_alternative<CommandLine>(r)) return "(accepted)";
  return std::get<std::string>(r);
}

TEST(CliParseTest, NoArgumentsRunsWithTheDefaultFile) {
  const CommandLine cl = ok({});
  EXPECT_EQ(cl.action, Action::run);
  EXPECT_EQ(cl.conf_file, "/etc/ferry/ferry.conf");
}

TEST(CliParseTest, ValuesAttachedOrSeparate) {
  EXPECT_EQ(ok({"-c", "/a.conf"}).conf_file, "/a.conf");
  EXPECT_EQ(ok({"-c/b.conf"}).conf_file, "/b.conf");
  EXPECT_EQ(ok({"-s", "reload"}).signal, "reload");
  EXPECT_EQ(ok({"-sstop"}).signal, "stop");
  EXPECT_EQ(ok({"-tqc", "/c.conf"}).conf_file, "/c.conf");
}

TEST(CliParseTest, Actions) {
  EXPECT_EQ(ok({"-t"}).action, Action::test);
  EXPECT_EQ(ok({"-T"}).action, Action::dump);
  EXPECT_EQ(ok({"-t", "-T"}).action, Action::dump);
  EXPECT_TRUE(ok({"-tq"}).quiet);
  EXPECT_EQ(ok({"-v"}).action, Action::version);
  EXPECT_EQ(ok({"-V"}).action, Action::version_verbose);
  EXPECT_EQ(ok({"--version"}).action, Action::version);
  EXPECT_EQ(ok({"-h"}).action, Action::help);
  EXPECT_EQ(ok({"--help"}).action, Action::help);
  EXPECT_EQ(ok({"-s", "quit", "-c", "/x"}).action, Action::signal);
  for (const char* sig : {"reload", "reopen", "quit", "stop"}) {
    EXPECT_EQ(ok({"-s", sig}).signal, sig);
  }
}

TEST(CliParseTest, BadCommandLinesAreRefusedWithAReason) {
  EXPECT_EQ(refused({"-x"}), "invalid option -x");
  EXPECT_EQ(refused({"-c"}), "option -c needs a value");
  EXPECT_EQ(refused({"-s"}), "option -s needs a value");
  EXPECT_NE(refused({"-s", "restart"}).find("invalid signal \"restart\""), std::string::npos);
  EXPECT_NE(refused({"file.conf"}).find("unexpected argument"), std::string::npos);
  EXPECT_NE(refused({"--long"}).find("unexpected argument"), std::string::npos);
  EXPECT_NE(refused({"-t", "-s", "reload"}).find("cannot be combined"), std::string::npos);
  EXPECT_NE(refused({"-q"}).find("only meaningful"), std::string::npos);
  EXPECT_EQ(refused({"-c", ""}), "option -c needs a value");
}

}  // namespace
}  // namespace ferry::master
