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
// could change it for all workers and for every master after an upgrade. (That the memfd takes
// no write is event/sealed_secret's test.)
TEST(ClientSecretTest, TheMemfdIsSealedAgainstWrites) {
  auto secret = ClientSecret::create();
  ASSERT_TRUE(secret);
  EXPECT_NE(secret->value(), ClientLimits::Secret{});
  const int fd = secret->fd();
  ASSERT_GE(fd, 0);
  EXPECT_NE(::fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
  const int seals = ::fcntl(fd, F_GET_SEALS);
  EXPECT_EQ(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL),
            F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
  secret->close_fd();
  EXPECT_EQ(secret->fd(), -1);
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
