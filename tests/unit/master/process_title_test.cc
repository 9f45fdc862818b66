// Tests of master/process_title's upgrade_binary_for(): which binary a binary upgrade executes,
// from argv[0] as the starter gave it.
#include "master/process_title.h"

#include <stdlib.h>
#include <unistd.h>

#include <climits>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

namespace ferry::master {
namespace {

namespace fs = std::filesystem;

std::string self() { return fs::read_symlink("/proc/self/exe").string(); }

class ProcessTitleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char name[] = "/tmp/ferry-title-XXXXXX";
    ASSERT_NE(::mkdtemp(name), nullptr);
    dir = name;
  }
  void TearDown() override { fs::remove_all(dir); }
  std::string dir;
};

// A link to this binary is kept as the link (a switched /opt/ferry/current runs the new release).
TEST_F(ProcessTitleTest, ALinkToThisBinaryIsKeptUnresolved) {
  const std::string link = dir + "/ferry";
  fs::create_symlink(self(), link);
  EXPECT_EQ(upgrade_binary_for(link), link);
  EXPECT_EQ(upgrade_binary_for(self()), self());
}

// Issue 18 review: argv[0] naming another program (`exec -a`, or PATH searched differently from
// the shell that started us) made the upgrade execute that program.
TEST_F(ProcessTitleTest, AnArgv0NamingAnotherProgramGivesThisBinary) {
  EXPECT_EQ(upgrade_binary_for("/bin/sh"), self());
  const std::string old_path = ::getenv("PATH") != nullptr ? ::getenv("PATH") : "";
  ::setenv("PATH", "/usr/bin:/bin", 1);
  EXPECT_EQ(upgrade_binary_for("true"), self()) << "a bare name found in PATH is another binary";
  EXPECT_EQ(upgrade_binary_for("no-such-ferry-binary"), self()) << "nothing found in PATH";
  ::setenv("PATH", old_path.c_str(), 1);
}

// A bare name found in PATH that is this binary is kept as found there.
TEST_F(ProcessTitleTest, ABareNameFoundInPathIsKept) {
  fs::create_symlink(self(), dir + "/ferry-under-test");
  const std::string old_path = ::getenv("PATH") != nullptr ? ::getenv("PATH") : "";
  ::setenv("PATH", (dir + ":/usr/bin:/bin").c_str(), 1);
  EXPECT_EQ(upgrade_binary_for("ferry-under-test"), dir + "/ferry-under-test");
  ::setenv("PATH", old_path.c_str(), 1);
}

}  // namespace
}  // namespace ferry::master
