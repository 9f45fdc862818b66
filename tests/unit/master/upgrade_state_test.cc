// Tests of master/upgrade_state: the page an old master passes, as the new master reads it —
// this binary's, an older ferry's (no magic word), and fds that are no page at all.
#include "master/upgrade_state.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include <gtest/gtest.h>

namespace ferry::master {
namespace {

void name_fd(int fd) {
  ASSERT_EQ(::setenv(UpgradeState::kVariable, std::to_string(fd).c_str(), 1), 0);
}

TEST(UpgradeStateTest, ANewMasterReadsWhatItsOldMasterPublishes) {
  UpgradeState old_master;
  ASSERT_FALSE(old_master.create(OldMasterState::serving));
  old_master.pass_to_exec();
  UpgradeState new_master;
  ASSERT_TRUE(new_master.adopt());
  EXPECT_EQ(new_master.peer(), OldMasterState::serving);
  old_master.publish(OldMasterState::stopping);
  EXPECT_EQ(new_master.peer(), OldMasterState::stopping);
}

// Issue 18 item 10: the new master says in the page that it hands the service back as it
// leaves; the old master reads it (on the new master's SIGCHLD doorbell). A fresh page says
// nothing, and an older ferry's page (zeroes there) too.
TEST(UpgradeStateTest, TheOldMasterReadsThatItsNewMasterLeaves) {
  UpgradeState old_master;
  ASSERT_FALSE(old_master.create(OldMasterState::serving));
  old_master.pass_to_exec();
  UpgradeState new_master;
  ASSERT_TRUE(new_master.adopt());
  EXPECT_FALSE(old_master.new_master_leaving());
  new_master.announce_leaving();
  EXPECT_TRUE(old_master.new_master_leaving());
  // The next upgrade's page starts afresh.
  ASSERT_FALSE(old_master.create(OldMasterState::serving));
  EXPECT_FALSE(old_master.new_master_leaving());
  UpgradeState none;
  none.announce_leaving();  // no page: nothing to say it in, nothing breaks
  EXPECT_FALSE(none.new_master_leaving());
}

// Issue 18 review: the page of a ferry from before the magic word (the release an upgrade comes
// from) was refused, so a new master could not tell a rollback from an old master leaving.
TEST(UpgradeStateTest, AnOlderFerrysPageWithoutMagicIsRead) {
  const int fd = ::memfd_create("ferry-upgrade-state", 0);
  ASSERT_GE(fd, 3);
  ASSERT_EQ(::ftruncate(fd, 4096), 0);
  const std::uint32_t winched = static_cast<std::uint32_t>(OldMasterState::winched);
  ASSERT_EQ(::pwrite(fd, &winched, sizeof winched, 0), static_cast<ssize_t>(sizeof winched));
  name_fd(fd);
  UpgradeState new_master;
  ASSERT_TRUE(new_master.adopt());
  EXPECT_EQ(new_master.peer(), OldMasterState::winched);
}

// An fd that is no page (a listener, in real life) is neither read nor closed; nor is a file
// shorter than a page, whose reading would fault.
TEST(UpgradeStateTest, AnFdThatIsNoPageIsLeftAlone) {
  int fds[2] = {-1, -1};
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  name_fd(fds[0]);
  UpgradeState from_pipe;
  EXPECT_FALSE(from_pipe.adopt());
  EXPECT_NE(::fcntl(fds[0], F_GETFD), -1);
  ::close(fds[0]);
  ::close(fds[1]);

  const int short_file = ::memfd_create("ferry-upgrade-state", 0);
  ASSERT_GE(short_file, 3);
  ASSERT_EQ(::ftruncate(short_file, 8), 0);
  name_fd(short_file);
  UpgradeState from_short;
  EXPECT_FALSE(from_short.adopt());
  ::close(short_file);
}

}  // namespace
}  // namespace ferry::master
