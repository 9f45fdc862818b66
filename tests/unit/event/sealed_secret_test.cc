// Tests of event/sealed_secret: a secret in a memfd no one can write, passed across an exec by
// its fd number and read back, and what is refused as one (and closed).
#include "event/sealed_secret.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <string>

#include <gtest/gtest.h>

namespace ferry::event {
namespace {

using Bytes = std::array<unsigned char, 32>;

constexpr const char* kName = "ferry-test-secret";

Bytes some_bytes() {
  Bytes b{};
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<unsigned char>(i * 7 + 1);
  return b;
}

bool open_fd(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

// What a program exec'd with `fd` open reads there: the bytes cross an exec.
std::string read_after_exec(int fd) {
  int out[2] = {-1, -1};
  if (::pipe2(out, O_CLOEXEC) != 0) return "pipe2 failed";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    const std::string path = "/proc/self/fd/" + std::to_string(fd);
    ::execl("/bin/cat", "cat", path.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  std::string got;
  char buf[64];
  for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;)
    got.append(buf, static_cast<std::size_t>(n));
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return got;
}

TEST(SealedSecretTest, TheMemfdCannotBeWrittenResizedOrMappedWritable) {
  const Bytes bytes = some_bytes();
  auto secret = SealedSecret::create(kName, "test secret", bytes);
  ASSERT_TRUE(secret);
  const int fd = secret->fd();
  ASSERT_GE(fd, 0);
  EXPECT_NE(::fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
  const unsigned char byte = 0;
  EXPECT_EQ(::pwrite(fd, &byte, 1, 0), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(::ftruncate(fd, 4096), -1);
  EXPECT_EQ(::mmap(nullptr, 16, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), MAP_FAILED);
  EXPECT_EQ(::fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE), -1);
  secret->close_fd();
  EXPECT_EQ(secret->fd(), -1);
  EXPECT_FALSE(open_fd(fd));
}

TEST(SealedSecretTest, PassedAcrossAnExecByItsNumberAndAdopted) {
  const Bytes bytes = some_bytes();
  auto made = SealedSecret::create(kName, "test secret", bytes);
  ASSERT_TRUE(made);
  ASSERT_TRUE(made->pass_to_exec("test secret"));
  EXPECT_EQ(::fcntl(made->fd(), F_GETFD) & FD_CLOEXEC, 0);
  const std::string crossed = read_after_exec(made->fd());
  EXPECT_EQ(crossed, std::string(bytes.begin(), bytes.end()));

  // The new side knows only the number: a second fd of the same memfd stands for it.
  const int passed = ::fcntl(made->fd(), F_DUPFD, 3);
  ASSERT_GE(passed, 0);
  Bytes read{};
  auto adopted = SealedSecret::adopt(UniqueFd(passed), kName, "test secret", read);
  ASSERT_TRUE(adopted);
  EXPECT_EQ(read, bytes);
  EXPECT_EQ(adopted->fd(), passed);
  EXPECT_NE(::fcntl(passed, F_GETFD) & FD_CLOEXEC, 0) << "close-on-exec again once taken";
}

// What could still be changed, or is not such a secret at all, is refused, closed, and nothing
// of it is left in the buffer.
TEST(SealedSecretTest, AnUnsealedOrMisSizedMemfdOrANonMemfdIsRefused) {
  const Bytes bytes = some_bytes();
  Bytes read{};
  const int unsealed = ::memfd_create(kName, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_GE(unsealed, 0);
  ASSERT_EQ(::pwrite(unsealed, bytes.data(), bytes.size(), 0), 32);
  EXPECT_FALSE(SealedSecret::adopt(UniqueFd(unsealed), kName, "test secret", read));
  EXPECT_FALSE(open_fd(unsealed));
  EXPECT_EQ(read, Bytes{});

  const int shorter = ::memfd_create(kName, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_GE(shorter, 0);
  ASSERT_EQ(::ftruncate(shorter, 16), 0);
  ASSERT_EQ(::fcntl(shorter, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE), 0);
  EXPECT_FALSE(SealedSecret::adopt(UniqueFd(shorter), kName, "test secret", read));
  EXPECT_FALSE(open_fd(shorter));

  auto other = SealedSecret::create("ferry-other-secret", "test secret", bytes);
  ASSERT_TRUE(other);
  const int other_name = ::fcntl(other->fd(), F_DUPFD_CLOEXEC, 3);
  EXPECT_FALSE(SealedSecret::adopt(UniqueFd(other_name), kName, "test secret", read));
  EXPECT_EQ(read, Bytes{});

  int pipe_fds[2] = {-1, -1};
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  const UniqueFd write_end(pipe_fds[1]);
  EXPECT_FALSE(SealedSecret::adopt(UniqueFd(pipe_fds[0]), kName, "test secret", read));
  EXPECT_FALSE(open_fd(pipe_fds[0]));
}

}  // namespace
}  // namespace ferry::event
