// Tests of master/upgrade_segments: what a new master takes over from FERRY_UPGRADE_SEGMENTS,
// and that a value naming fds that are not an old master's segments takes none of them over.
#include "master/upgrade_segments.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace ferry::master {
namespace {

bool open_fd(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

// An fd of the new master's own (a listener, in real life): a pipe, above stderr.
struct OwnFd {
  int fds[2] = {-1, -1};
  OwnFd() { EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0); }
  ~OwnFd() {
    for (int fd : fds) {
      if (open_fd(fd)) ::close(fd);
    }
  }
  [[nodiscard]] int fd() const { return fds[0]; }
};

// Issue 17 review: the new master took over (and on failure closed) whatever fd the value
// named; a value naming one of its listeners closed that listener.
TEST(UpgradeSegmentsTest, AValueNamingFdsThatAreNotSegmentsLeavesThemOpen) {
  OwnFd mine;
  const std::string n = std::to_string(mine.fd());
  for (const std::string& value :
       {"2;-1;-1;-1;" + n, "2;-1;-1;" + n + ";-1", "2;" + n + ";" + n + ";-1;-1",
        n + ";" + n + ";" + n + ";0", "2;x;" + n, "2;" + n + ";1;2;3;4;5"}) {
    SCOPED_TRACE(value);
    ASSERT_EQ(::setenv(UpgradeSegments::kVariable, value.c_str(), 1), 0);
    UpgradeSegments segments;
    EXPECT_NE(segments.open_client_limits(true), nullptr);  // a fresh table
    auto stats = worker::StatsTable::create("test", ::getpid(), std::time(nullptr));
    ASSERT_NE(stats, nullptr);
    EXPECT_FALSE(segments.inherit_first(*stats));
    EXPECT_TRUE(open_fd(mine.fd()));
    EXPECT_EQ(::getenv(UpgradeSegments::kVariable), nullptr);
  }
}

// An older ferry passed "REGISTRY;COUNTERS;LIMITS;SHARE_BASE" with a table of another layout:
// that table's memfd is closed, not kept open in this master and every worker.
TEST(UpgradeSegmentsTest, AnOlderFerrysTableIsClosed) {
  const int table = ::memfd_create("ferry-client-limits", 0);
  ASSERT_GE(table, 0);
  struct stat planted {};
  ASSERT_EQ(::fstat(table, &planted), 0);
  const std::string value = "-1;-1;" + std::to_string(table) + ";1024";
  ASSERT_EQ(::setenv(UpgradeSegments::kVariable, value.c_str(), 1), 0);
  UpgradeSegments segments;
  EXPECT_NE(segments.open_client_limits(true), nullptr);
  // Closed: the number may be the new table's now, but not that file.
  struct stat now {};
  EXPECT_TRUE(::fstat(table, &now) == -1 || now.st_ino != planted.st_ino);
}

// What a master passes, a new master takes: the same table and the same secret.
TEST(UpgradeSegmentsTest, ANewMasterTakesTheTableAndTheSecretPassed) {
  UpgradeSegments old_master;
  ASSERT_EQ(::unsetenv(UpgradeSegments::kVariable), 0);
  worker::ClientLimits* table = old_master.open_client_limits(false);
  ASSERT_NE(table, nullptr);
  auto stats = worker::StatsTable::create("test", ::getpid(), std::time(nullptr));
  ASSERT_NE(stats, nullptr);
  old_master.pass_to_exec(*stats);
  const char* passed = ::getenv(UpgradeSegments::kVariable);
  ASSERT_NE(passed, nullptr);
  EXPECT_EQ(std::string(passed).rfind("2;", 0), 0u) << passed;

  UpgradeSegments new_master;
  worker::ClientLimits* taken = new_master.open_client_limits(true);
  ASSERT_NE(taken, nullptr);
  EXPECT_EQ(new_master.client_secret(), old_master.client_secret());
  std::uint32_t bucket = 0;
  ASSERT_EQ(table->acquire(12345, 5, worker::ClientLimits::kNoShare, &bucket),
            worker::ClientLimits::Admit::ok);
  EXPECT_EQ(taken->count(12345), 1u);  // one table, seen through two mappings
}

}  // namespace
}  // namespace ferry::master
