// Tests of worker/proxy/client_secret: the per-client hash's key in a memfd no one can write,
// and what a new master accepts as one an old master passed.
#include "worker/proxy/client_secret.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

#include <gtest/gtest.h>

namespace ferry::worker {
namespace {

// Issue 17: the secret lived in the per-client table, which every worker can write; a worker
// could change it for all workers and for every master after an upgrade.
TEST(ClientSecretTest, TheMemfdCannotBeWrittenResizedOrMappedWritable) {
  auto secret = ClientSecret::create();
  ASSERT_TRUE(secret);
  EXPECT_NE(secret->value(), ClientLimits::Secret{});
  const int fd = secret->fd();
  ASSERT_GE(fd, 0);
  EXPECT_NE(::fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
  const unsigned char byte = 0;
  EXPECT_EQ(::pwrite(fd, &byte, 1, 0), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(::ftruncate(fd, 4096), -1);
  EXPECT_EQ(::mmap(nullptr, 16, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), MAP_FAILED);
  // Nor can the seals be taken off or added to.
  EXPECT_EQ(::fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE), -1);
}

TEST(ClientSecretTest, ANewMasterReadsTheSecretItsOldMasterPassed) {
  auto old_master = ClientSecret::create();
  ASSERT_TRUE(old_master);
  auto other = ClientSecret::create();
  ASSERT_TRUE(other);
  EXPECT_NE(old_master->value(), other->value());
  const int passed = ::fcntl(old_master->fd(), F_DUPFD, 3);  // not close-on-exec, as passed
  ASSERT_GE(passed, 0);
  auto adopted = ClientSecret::adopt(event::UniqueFd(passed));
  ASSERT_TRUE(adopted);
  EXPECT_EQ(adopted->value(), old_master->value());
  EXPECT_EQ(adopted->fd(), passed);
  EXPECT_NE(::fcntl(passed, F_GETFD) & FD_CLOEXEC, 0);
}

// What could still be changed, or is not a secret at all, is refused (and closed).
TEST(ClientSecretTest, AnUnsealedOrMisSizedMemfdIsRefused) {
  const int unsealed = ::memfd_create("ferry-client-secret", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_GE(unsealed, 0);
  const unsigned char bytes[16] = {1, 2, 3};
  ASSERT_EQ(::pwrite(unsealed, bytes, sizeof bytes, 0), 16);
  EXPECT_FALSE(ClientSecret::adopt(event::UniqueFd(unsealed)));
  EXPECT_EQ(::fcntl(unsealed, F_GETFD), -1);  // closed

  const int longer = ::memfd_create("ferry-client-secret", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_GE(longer, 0);
  ASSERT_EQ(::ftruncate(longer, 32), 0);
  ASSERT_EQ(::fcntl(longer, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE), 0);
  EXPECT_FALSE(ClientSecret::adopt(event::UniqueFd(longer)));

  int pipe_fds[2] = {-1, -1};
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  const event::UniqueFd write_end(pipe_fds[1]);
  EXPECT_FALSE(ClientSecret::adopt(event::UniqueFd(pipe_fds[0])));
}

}  // namespace
}  // namespace ferry::worker
