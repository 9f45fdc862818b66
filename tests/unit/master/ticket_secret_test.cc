// Tests of master/ticket_secret: the ticket secret an old master names in FERRY_TICKET_SECRET
// gives the new master the same ticket keys; garbage, or a number that is not the secret's memfd,
// gives new keys and leaves that fd alone.
#include "master/ticket_secret.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>

#include <gtest/gtest.h>

namespace ferry::master {
namespace {

using worker::tls::TicketKey;
using worker::tls::TicketKeys;

// Period 1's key name: equal for two TicketKeys exactly when their secrets are.
std::string name_of(const std::shared_ptr<TicketKeys>& keys) {
  TicketKey k;
  if (keys == nullptr || !keys->key(1, k)) return "";
  return std::string(k.name.begin(), k.name.end());
}

bool open_fd(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

TEST(TicketSecretTest, TheNewMasterDerivesTheOldMastersKeys) {
  TicketSecret old_master;
  const auto old_keys = old_master.make_keys();
  ASSERT_NE(old_keys, nullptr);
  old_master.pass_to_exec();  // as in the child about to exec: the variable names the memfd
  const char* passed = std::getenv(TicketSecret::kVariable);
  ASSERT_NE(passed, nullptr);
  const int fd = std::atoi(passed);
  EXPECT_EQ(::fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
  // The new master reads its own fd of it (here: a second one, as the exec would keep it).
  const int inherited = ::fcntl(fd, F_DUPFD, 3);
  ASSERT_GE(inherited, 0);
  ASSERT_EQ(::setenv(TicketSecret::kVariable, std::to_string(inherited).c_str(), 1), 0);

  TicketSecret new_master;
  new_master.take_passed(true);
  EXPECT_EQ(std::getenv(TicketSecret::kVariable), nullptr) << "read once, then unset";
  EXPECT_NE(::fcntl(inherited, F_GETFD) & FD_CLOEXEC, 0) << "kept, for the next upgrade only";
  EXPECT_EQ(name_of(new_master.make_keys()), name_of(old_keys));
  new_master.enter_worker();
  EXPECT_FALSE(open_fd(inherited)) << "a worker keeps no fd of the secret";
}

TEST(TicketSecretTest, GarbageOrAnotherFdGivesNewKeysAndLeavesTheFdOpen) {
  TicketSecret first;
  const std::string keys_of_first = name_of(first.make_keys());
  for (const std::string garbage : {"", "12x", "-1", "2", "99999"}) {
    ASSERT_EQ(::setenv(TicketSecret::kVariable, garbage.c_str(), 1), 0);
    TicketSecret secret;
    secret.take_passed(true);
    EXPECT_EQ(std::getenv(TicketSecret::kVariable), nullptr);
    const std::string keys = name_of(secret.make_keys());
    EXPECT_NE(keys, "") << garbage;
    EXPECT_NE(keys, keys_of_first) << garbage;
  }
  int pipe_fds[2] = {-1, -1};
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  ASSERT_EQ(::setenv(TicketSecret::kVariable, std::to_string(pipe_fds[0]).c_str(), 1), 0);
  TicketSecret secret;
  secret.take_passed(true);
  EXPECT_TRUE(open_fd(pipe_fds[0])) << "maybe one of ours: never closed";
  EXPECT_NE(name_of(secret.make_keys()), "");
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
}

// A master not started by an upgrade takes no secret: the memfd named is closed.
TEST(TicketSecretTest, AMasterThatIsNoUpgradesClosesAPassedSecret) {
  TicketSecret old_master;
  const auto old_keys = old_master.make_keys();
  old_master.pass_to_exec();
  const int inherited = ::fcntl(std::atoi(std::getenv(TicketSecret::kVariable)), F_DUPFD, 3);
  ASSERT_GE(inherited, 0);
  ASSERT_EQ(::setenv(TicketSecret::kVariable, std::to_string(inherited).c_str(), 1), 0);
  TicketSecret fresh;
  fresh.take_passed(false);
  EXPECT_EQ(std::getenv(TicketSecret::kVariable), nullptr);
  EXPECT_FALSE(open_fd(inherited));
  EXPECT_NE(name_of(fresh.make_keys()), name_of(old_keys));
}

}  // namespace
}  // namespace ferry::master
