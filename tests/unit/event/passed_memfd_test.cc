// Tests of event/passed_memfd: what check_passed_memfd() takes for a segment passed across exec,
// what it refuses and why, and that it leaves every fd it refuses open.
#include "event/passed_memfd.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "event/syscall_util.h"

namespace ferry::event {
namespace {

using Size = PassedMemfd::Size;

UniqueFd memfd(const char* name, off_t size) {
  UniqueFd fd(::memfd_create(name, MFD_CLOEXEC));
  EXPECT_TRUE(fd);
  EXPECT_EQ(::ftruncate(fd.get(), size), 0);
  return fd;
}

bool open_fd(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

TEST(PassedMemfdTest, AMemfdOfTheRightNameAndSizeIsTaken) {
  const UniqueFd fd = memfd("ferry-upgrade-state", 4096);
  EXPECT_TRUE(check_passed_memfd(fd.get(), {"ferry-upgrade-state", 4096}).ok());
  EXPECT_TRUE(check_passed_memfd(fd.get(), {"ferry-", 4096}).ok());
  EXPECT_TRUE(check_passed_memfd(fd.get(), {"ferry-", 0, Size::at_least}).ok());
  EXPECT_TRUE(check_passed_memfd(fd.get(), {"ferry-upgrade-state", 4096, Size::at_least}).ok());
  const PassedFdCheck check = check_passed_memfd(fd.get(), {"ferry-upgrade-state", 4096});
  EXPECT_EQ(check.fault, PassedFdFault::none);
  EXPECT_EQ(check.reason, "");
  EXPECT_TRUE(open_fd(fd.get()));
}

TEST(PassedMemfdTest, AMemfdOfAnotherNameIsRefusedAndLeftOpen) {
  const UniqueFd fd = memfd("ferry-client-limits", 4096);
  const PassedFdCheck check = check_passed_memfd(fd.get(), {"ferry-upgrade-state", 4096});
  EXPECT_EQ(check.fault, PassedFdFault::other_name);
  EXPECT_NE(check.reason.find("ferry-client-limits"), std::string::npos) << check.reason;
  EXPECT_NE(check.reason.find("ferry-upgrade-state"), std::string::npos) << check.reason;
  EXPECT_TRUE(open_fd(fd.get()));
  // The name must begin with the prefix, not merely contain it.
  const UniqueFd other = memfd("not-ferry-upgrade-state", 4096);
  EXPECT_EQ(check_passed_memfd(other.get(), {"ferry-upgrade-state", 4096}).fault,
            PassedFdFault::other_name);
}

TEST(PassedMemfdTest, AMemfdOfAnotherSizeIsRefusedAndLeftOpen) {
  const UniqueFd fd = memfd("ferry-upgrade-state", 100);
  for (const PassedMemfd& want :
       {PassedMemfd{"ferry-upgrade-state", 4096}, PassedMemfd{"ferry-upgrade-state", 99},
        PassedMemfd{"ferry-upgrade-state", 101, Size::at_least}}) {
    SCOPED_TRACE(want.size);
    const PassedFdCheck check = check_passed_memfd(fd.get(), want);
    EXPECT_EQ(check.fault, PassedFdFault::wrong_size);
    EXPECT_NE(check.reason.find("100 bytes"), std::string::npos) << check.reason;
  }
  EXPECT_TRUE(check_passed_memfd(fd.get(), {"ferry-upgrade-state", 99, Size::at_least}).ok());
  EXPECT_TRUE(open_fd(fd.get()));
}

// A listener of the new master's own, say, that a bad value names.
TEST(PassedMemfdTest, ASocketIsRefusedAndLeftOpen) {
  const UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(fd);
  const PassedFdCheck check = check_passed_memfd(fd.get(), {"ferry-", 0, Size::at_least});
  EXPECT_EQ(check.fault, PassedFdFault::not_a_memfd);
  EXPECT_NE(check.reason.find("a socket"), std::string::npos) << check.reason;
  EXPECT_TRUE(open_fd(fd.get()));
}

TEST(PassedMemfdTest, AFileOnDiskIsRefusedAndLeftOpen) {
  const UniqueFd fd(::open("/proc/self/exe", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd);
  const PassedFdCheck check = check_passed_memfd(fd.get(), {"", 0, Size::at_least});
  EXPECT_EQ(check.fault, PassedFdFault::not_a_memfd) << check.reason;
  EXPECT_NE(check.reason.find("not a memfd"), std::string::npos) << check.reason;
  EXPECT_TRUE(open_fd(fd.get()));
}

TEST(PassedMemfdTest, AClosedNumberIsRefused) {
  int number = -1;
  {
    const UniqueFd fd = memfd("ferry-upgrade-state", 4096);
    number = fd.get();
  }
  ASSERT_FALSE(open_fd(number));
  const PassedFdCheck check = check_passed_memfd(number, {"ferry-upgrade-state", 4096});
  EXPECT_EQ(check.fault, PassedFdFault::not_open);
  EXPECT_FALSE(check.reason.empty());
}

// 0-2 are the standard streams, never a segment; and what does not fit an int is no fd.
TEST(PassedMemfdTest, TheStandardStreamsAndOutOfRangeNumbersAreRefused) {
  for (const long n : {-1L, 0L, 1L, 2L, 1L << 40}) {
    SCOPED_TRACE(n);
    EXPECT_EQ(check_passed_memfd(n, {"", 0, Size::at_least}).fault,
              PassedFdFault::not_a_passed_number);
  }
  EXPECT_TRUE(open_fd(STDERR_FILENO));
}

}  // namespace
}  // namespace ferry::event
