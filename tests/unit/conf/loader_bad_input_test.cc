// Tests of conf/loader against bad input: integers libconfig would wrap, huge sizes, binary
// junk, deep nesting and includes of what is not a configuration file — each refused at its line.
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "conf/lexical.h"
#include "conf/loader.h"
#include "conf/source.h"
#include "tests/support/process.h"
#include "tests/unit/conf/load_errors.h"

namespace ferry::conf {
namespace {

TEST(LoaderBadInputTest, IntegersLibconfigWouldWrapAreRefusedWithTheirLine) {
  // libconfig reads 4294967298 as 2 and 99999999999999999999 as -1: the loader must not.
  for (const std::string v :
       {"4294967298", "2147483648", "-2147483649", "9223372036854775807", "9223372036854775808",
        "99999999999999999999", "0x100000002", "99999999999999999999L", "-9223372036854775809L"}) {
    const LoadResult r = load_text("\nworker_processes = " + v + ";\n", "n.conf", ".");
    EXPECT_FALSE(r.config) << v;
    ASSERT_EQ(r.errors.size(), 1U) << v << "\n" << errors_of(r);
    EXPECT_EQ(r.errors[0].line, 2) << v;
    EXPECT_NE(r.errors[0].message.find(v + " is out of the"), std::string::npos) << errors_of(r);
  }
  // What fits is read as written; 64-bit values take the L suffix.
  const LoadResult fits =
      load_text("worker_processes = 2; worker_rlimit_nofile = 1073741824L; x1234567890123 = 0x7f;",
                "n.conf", ".");
  EXPECT_EQ(errors_of(fits).find("out of the"), std::string::npos) << errors_of(fits);
  // Digits in names, strings and comments are not numbers.
  const LoadResult quoted = load_text(
      "pid_file = \"/run/99999999999999999999\"; # 99999999999999999999\n"
      "/* 4294967298 */ // 4294967298\nlog = { level = \"info\"; };\n",
      "n.conf", ".");
  EXPECT_TRUE(quoted.config) << errors_of(quoted);
  const LoadResult floats = load_text("worker_processes = 1e400;", "n.conf", ".");
  EXPECT_NE(errors_of(floats).find("expected an integer, found a float"), std::string::npos)
      << errors_of(floats);
}

TEST(LoaderBadInputTest, HugeSizesDurationsAndPortsAreRefused) {
  const std::string proxy =
      "proxies = ( { name = \"a\"; listen = \"127.0.0.1:1\"; upstream = "
      "\"127.0.0.1:2\"; ";
  const LoadResult size =
      load_text(proxy + "buffer_size = \"99999999999999999999k\"; } );", "s.conf", ".");
  // More digits than 64 bits hold: refused, and said so on the setting.
  EXPECT_NE(
      errors_of(size).find("proxies.[0].buffer_size: \"99999999999999999999k\" is not a size"),
      std::string::npos)
      << errors_of(size);
  for (const std::string d : {"99999999999999999999d", "106751991167d", "9223372036854775807ms"}) {
    const LoadResult r = load_text(proxy + "connect_timeout = \"" + d + "\"; } );", "d.conf", ".");
    EXPECT_NE(errors_of(r).find("is too long (at most 365d)"), std::string::npos) << errors_of(r);
  }
  const LoadResult port =
      load_text(proxy + "} ); status = { listen = \"127.0.0.1:70000\"; };", "p.conf", ".");
  EXPECT_NE(errors_of(port).find("port must be 1-65535"), std::string::npos) << errors_of(port);
}

TEST(LoaderBadInputTest, BinaryJunkIsRefusedAtItsLine) {
  // Without the check, libconfig would stop at the NUL and take the good first line alone.
  const LoadResult nul =
      load_text(std::string("worker_processes = 1;\n\0 junk (((", 32), "b.conf", ".");
  EXPECT_FALSE(nul.config);
  ASSERT_FALSE(nul.errors.empty());
  EXPECT_EQ(nul.errors[0].to_string(),
            "b.conf:2: contains a NUL byte (the file is binary, not configuration text)");
  for (const std::string bad : {"\xff", "\xc3", "\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80"}) {
    const LoadResult r = load_text("\n\nuser = \"" + bad + "\";\n", "u.conf", ".");
    EXPECT_FALSE(r.config);
    EXPECT_NE(errors_of(r).find("u.conf:3: contains bytes that are not UTF-8 text"),
              std::string::npos)
        << errors_of(r);
  }
  const LoadResult utf8 =
      load_text("# naïve — ünïcödé 🚀\nlog = { level = \"info\"; };", "u.conf", ".");
  EXPECT_TRUE(utf8.config) << errors_of(utf8);
  // Random bytes from a fixed seed: always an error, never a crash.
  std::uint64_t x = 42;
  for (int round = 0; round < 200; ++round) {
    std::string junk;
    for (int i = 0; i < 1000; ++i) {
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;
      junk += static_cast<char>(x >> 56);
    }
    EXPECT_FALSE(load_text(junk, "r.conf", ".").config) << round;
  }
}

TEST(LoaderBadInputTest, DeepNestingAndHugeGroupsAreRefusedBeforeParsing) {
  for (const auto& [open, close] :
       {std::pair{"{ a = ", "};"}, std::pair{"(", ")"}, std::pair{"[", "]"}}) {
    std::string text = "a = ";
    for (int i = 0; i < 100'000; ++i) text += open;
    for (int i = 0; i < 100'000; ++i) text += close;
    const LoadResult r = load_text(text + ";\n", "deep.conf", ".");
    EXPECT_FALSE(r.config);
    ASSERT_EQ(r.errors.size(), 1U) << errors_of(r);
    EXPECT_EQ(r.errors[0].to_string(),
              "deep.conf:1: groups, lists and arrays nested deeper than 64 levels");
  }
  std::string at_limit = "a = ";
  for (int i = 0; i < kMaxNesting; ++i) at_limit += "(";
  for (int i = 0; i < kMaxNesting; ++i) at_limit += ")";
  EXPECT_EQ(errors_of(load_text(at_limit + ";", "l.conf", ".")).find("nested"), std::string::npos);

  std::string many;
  for (int i = 0; i < 30'000; ++i) many += "x" + std::to_string(i) + " = 1;\n";
  const auto start = std::chrono::steady_clock::now();
  const LoadResult r = load_text(many, "many.conf", ".");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_NE(errors_of(r).find("many.conf:1001: more than 1000 settings in one group"),
            std::string::npos)
      << errors_of(r).substr(0, 500);
}

TEST(LoaderBadInputTest, IncludesOfDevicesDirectoriesAndHugeFilesAreRefused) {
  test::TempDir dir;
  ::mkdir((dir.path() + "/folder").c_str(), 0755);
  const std::string big = dir.write("big.conf", std::string(Source::kMaxBytes + 1, '#'));
  const std::string half = dir.write("half.conf", "#" + std::string(Source::kMaxBytes / 2, ' '));
  for (const auto& [target, why] : std::vector<std::pair<std::string, std::string>>{
           {"/dev/zero", "not a regular file"},
           {"/dev/urandom", "not a regular file"},
           {"folder", "it is a directory"},
           {"big.conf", "larger than 8 MiB"},
           {"nope.conf", "No such file or directory"}}) {
    const std::string main = dir.write("main.conf", "\n@include \"" + target + "\"\n");
    const LoadResult r = load_file(main);
    EXPECT_FALSE(r.config) << target;
    EXPECT_NE(errors_of(r).find(main + ":2: @include: cannot read"), std::string::npos)
        << errors_of(r);
    EXPECT_NE(errors_of(r).find(why), std::string::npos) << errors_of(r);
  }
  // Three halves: each file fits, the whole does not.
  const std::string main = dir.write(
      "main.conf", "@include \"half.conf\"\n@include \"half.conf\"\n@include \"half.conf\"\n");
  EXPECT_NE(errors_of(load_file(main))
                .find("main.conf:3: @include: \"half.conf\" makes the "
                      "configuration larger than 8 MiB"),
            std::string::npos)
      << errors_of(load_file(main));
  const LoadResult whole = load_file(big);
  EXPECT_EQ(errors_of(whole), big + ": cannot read the configuration file: larger than 8 MiB\n");
  EXPECT_NE(errors_of(load_file("/dev/zero")).find("not a regular file"), std::string::npos);
}

}  // namespace
}  // namespace ferry::conf
