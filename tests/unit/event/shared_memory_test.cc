// Unit tests of event/shared_memory.cc's sealed segments: the creator writes, a forked child's
// read-only mapping sees it and cannot be made writable again.
#include "event/shared_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <gtest/gtest.h>

namespace ferry::event {
namespace {

TEST(SharedMemoryTest, ASealedSegmentsReadOnlyMappingCannotBeMadeWritable) {
  SharedMemory shm;
  ASSERT_FALSE(shm.create_sealed(4096, "ferry-test-sealed"));
  std::memcpy(shm.data(), "before", 7);
  const pid_t child = ::fork();
  ASSERT_NE(child, -1);
  if (child == 0) {
    // Exit codes: 0 all as expected; others name the first thing that was not.
    const int fd = shm.fd();
    const auto* ro = static_cast<const char*>(shm.become_read_only());
    if (ro == nullptr) ::_exit(2);
    if (std::strcmp(ro, "before") != 0) ::_exit(3);
    if (::mprotect(const_cast<char*>(ro), 4096, PROT_READ | PROT_WRITE) == 0) ::_exit(4);
    // The fd is closed by become_read_only(); a new writable mapping through another fd of the
    // same memfd would be refused by the seal too (checked in the parent).
    if (::fcntl(fd, F_GETFD) != -1) ::_exit(5);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  // No new writable mapping, no write(2), no resize.
  EXPECT_EQ(::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, shm.fd(), 0), MAP_FAILED);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(::pwrite(shm.fd(), "x", 1, 0), -1);
  EXPECT_EQ(::ftruncate(shm.fd(), 8192), -1);
  // The creator's own mapping still writes.
  std::memcpy(shm.data(), "after", 6);
  EXPECT_STREQ(static_cast<const char*>(shm.data()), "after");
}

}  // namespace
}  // namespace ferry::event
