// `ferry ctl show sessions` and `kill session ID` / `kill sessions client ADDRESS` against the
// real binary with two workers: real clients held open, their byte counts, filters, the access
// log's `killed`, refusals, and a reader of another uid.
#include <arpa/inet.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "event/syscall_util.h"
#include "tests/support/config_text.h"
#include "tests/support/echo_server.h"
#include "tests/support/ferry_instance.h"
#include "tests/support/sockets.h"

namespace ferry::test {
namespace {

using std::chrono::seconds;

using Row = std::map<std::string, std::string>;

// `show sessions --json`: one object a line; strings unquoted, numbers as written.
std::vector<Row> parse_rows(const std::string& json) {
  std::vector<Row> rows;
  static const std::regex pair(R"re("([a-z_]+)": ("([^"]*)"|[^,}]+))re");
  std::size_t from = 0;
  while (from < json.size()) {
    const std::size_t eol = json.find('\n', from);
    const std::string line = json.substr(from, eol == std::string::npos ? eol : eol - from);
    from = eol == std::string::npos ? json.size() : eol + 1;
    if (line.find('{') == std::string::npos) continue;
    Row row;
    for (auto it = std::sregex_iterator(line.begin(), line.end(), pair);
         it != std::sregex_iterator(); ++it) {
      row[(*it)[1]] = (*it)[3].matched ? (*it)[3].str() : (*it)[2].str();
    }
    rows.push_back(row);
  }
  return rows;
}

// One request on the control socket at `path`, as any client may send it: the whole answer.
std::string ask(const std::string& path, const std::string& line) {
  event::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
  if (!fd || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun) == -1) return "";
  if (!send_all(fd.get(), line + "\n")) return "";
  return read_exactly(fd.get(), 1 << 20, seconds(5));
}

class SessionsCtlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    web_port_ = free_port();
    alt_port_ = free_port();
    access_log_ = dir_.path() + "/access.log";
  }

  std::string config(const std::string& top = "") const {
    return config_text("worker_processes = 2;\nworker_connections = 256;\n" + top,
                       {{.name = "web",
                         .listen = {loopback(web_port_)},
                         .upstream = "app",
                         .extra = "access_log = \"" + access_log_ + "\";"},
                        {.name = "alt",
                         .listen = {loopback(alt_port_)},
                         .upstream = "other",
                         .extra = "access_log = \"off\";"}},
                       {upstream_of({server_at(app_.port())}, "", "app"),
                        upstream_of({server_at(other_.port())}, "", "other")});
  }

  std::vector<Row> show(FerryInstance& ferry, const std::string& filters = "") {
    const Finished f = ferry.ctl("show sessions " + filters + " --json");
    EXPECT_EQ(f.exit_code, 0) << f.err << ferry.log();
    return parse_rows(f.out);
  }

  // A client of `port` from `source`, its echo done (so that the session is relaying).
  int open_client(int port, const std::string& source = "") {
    const int fd = connect_from(source, "127.0.0.1", port);
    EXPECT_GE(fd, 0);
    EXPECT_TRUE(fd >= 0 && echo_round_trip(fd, "hello"));
    held_.emplace_back(fd);
    return fd;
  }

  static std::string client_of(int fd) {
    sockaddr_in sin{};
    socklen_t len = sizeof sin;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len);
    char ip[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &sin.sin_addr, ip, sizeof ip);
    return std::string(ip) + ":" + std::to_string(ntohs(sin.sin_port));
  }

  static const Row* row_of(const std::vector<Row>& rows, const std::string& client) {
    for (const Row& r : rows) {
      if (r.at("client") == client) return &r;
    }
    return nullptr;
  }

  TempDir dir_;
  EchoServer app_;
  EchoServer other_;
  int web_port_ = 0;
  int alt_port_ = 0;
  std::string access_log_;
  std::vector<event::UniqueFd> held_;
};

TEST_F(SessionsCtlTest, ListsTheHeldSessionsWithGrowingByteCounts) {
  FerryInstance ferry(config());
  ASSERT_TRUE(ferry.start()) << ferry.log();
  EXPECT_EQ(show(ferry).size(), 0u);
  const int a = open_client(web_port_);
  const int b = open_client(web_port_);
  const int c = open_client(alt_port_);
  auto rows = show(ferry);
  ASSERT_EQ(rows.size(), 3u) << ferry.ctl("show sessions").out;
  const auto workers = ferry.workers();
  for (const auto& [fd, proxy, port] :
       {std::tuple{a, "web", app_.port()}, {b, "web", app_.port()}, {c, "alt", other_.port()}}) {
    const Row* r = row_of(rows, client_of(fd));
    ASSERT_NE(r, nullptr) << client_of(fd);
    EXPECT_EQ(r->at("proxy"), proxy);
    EXPECT_EQ(r->at("server"), loopback(port));
    EXPECT_EQ(r->at("server_address"), loopback(port));
    EXPECT_EQ(r->at("phase"), "relaying");
    EXPECT_EQ(r->at("bytes_from_client"), "5");
    EXPECT_EQ(r->at("bytes_to_client"), "5");
    EXPECT_TRUE(workers.count(std::stoi(r->at("worker")))) << r->at("worker");
    EXPECT_EQ(r->at("id").substr(0, r->at("id").find(':')), r->at("worker"));
  }
  ASSERT_TRUE(echo_round_trip(a, std::string(1000, 'x')));
  rows = show(ferry);
  const Row* r = row_of(rows, client_of(a));
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->at("bytes_from_client"), "1005");
  EXPECT_EQ(r->at("bytes_to_client"), "1005");

  // The text table: a header and a line per session, "-" for nothing.
  const Finished text = ferry.ctl("show sessions");
  EXPECT_EQ(text.exit_code, 0) << text.err;
  EXPECT_EQ(text.out.rfind("ID", 0), 0u) << text.out;
  EXPECT_EQ(count_of(text.out, "\n"), 4u) << text.out;
  EXPECT_NE(text.out.find(client_of(c)), std::string::npos) << text.out;
}

TEST_F(SessionsCtlTest, FiltersNarrowTheList) {
  FerryInstance ferry(config());
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const int a = open_client(web_port_);
  const int b = open_client(web_port_, "127.0.0.2");
  const int c = open_client(alt_port_, "127.0.0.2");
  EXPECT_EQ(show(ferry).size(), 3u);
  const auto only = [&](const std::string& filter, std::vector<int> fds) {
    const auto rows = show(ferry, filter);
    EXPECT_EQ(rows.size(), fds.size()) << filter;
    for (int fd : fds) EXPECT_NE(row_of(rows, client_of(fd)), nullptr) << filter;
  };
  only("proxy web", {a, b});
  only("proxy alt", {c});
  only("server app/" + loopback(app_.port()), {a, b});
  only("server other/" + loopback(other_.port()), {c});
  only("server app/" + loopback(other_.port()), {});
  only("client 127.0.0.2", {b, c});
  only("client " + client_of(c), {c});
  only("client 127.0.0.2 proxy web", {b});
  only("client 127.0.0.3", {});
}

TEST_F(SessionsCtlTest, KillSessionClosesExactlyThatOne) {
  FerryInstance ferry(config());
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const int a = open_client(web_port_);
  const int b = open_client(web_port_);
  const int c = open_client(web_port_);
  const Row* r = nullptr;
  auto rows = show(ferry);
  ASSERT_NE(r = row_of(rows, client_of(b)), nullptr);
  const std::string id = r->at("id");
  const Finished kill = ferry.ctl("kill session " + id);
  EXPECT_EQ(kill.exit_code, 0) << kill.err << ferry.log();
  EXPECT_EQ(kill.out, "killed 1 session(s)\n");
  EXPECT_TRUE(closed_by_peer(b, seconds(5)));
  EXPECT_TRUE(echo_round_trip(a, "still"));
  EXPECT_TRUE(echo_round_trip(c, "still"));
  EXPECT_EQ(show(ferry).size(), 2u);
  EXPECT_TRUE(eventually([&] {
    const std::string log = read_file(access_log_);
    return log.find(client_of(b)) != std::string::npos;
  })) << read_file(access_log_);
  const std::string log = read_file(access_log_);
  const std::size_t at = log.find(client_of(b));
  const std::string line = log.substr(at, log.find('\n', at) - at);
  EXPECT_TRUE(line.ends_with(" killed")) << line;
  // Gone now: an error, nothing else killed.
  const Finished again = ferry.ctl("kill session " + id);
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_EQ(again.err.rfind("ferry: no session", 0), 0u) << again.err;
  EXPECT_EQ(show(ferry).size(), 2u);
}

TEST_F(SessionsCtlTest, KillSessionsOfAClientClosesOnlyItsOwn) {
  FerryInstance ferry(config());
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const int mine = open_client(web_port_);
  const int theirs1 = open_client(web_port_, "127.0.0.2");
  const int theirs2 = open_client(alt_port_, "127.0.0.2");
  const Finished kill = ferry.ctl("kill sessions client 127.0.0.2");
  EXPECT_EQ(kill.exit_code, 0) << kill.err << ferry.log();
  EXPECT_EQ(kill.out, "killed 2 session(s)\n");
  EXPECT_TRUE(closed_by_peer(theirs1, seconds(5)));
  EXPECT_TRUE(closed_by_peer(theirs2, seconds(5)));
  EXPECT_TRUE(echo_round_trip(mine, "still"));
  const auto rows = show(ferry);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].at("client"), client_of(mine));
  EXPECT_TRUE(eventually([&] { return count_of(read_file(access_log_), " killed\n") == 1; }))
      << read_file(access_log_);
  // The lead's kill by server still works.
  const Finished by_server = ferry.ctl("kill sessions app/" + loopback(app_.port()));
  EXPECT_EQ(by_server.exit_code, 0) << by_server.err;
  EXPECT_TRUE(closed_by_peer(mine, seconds(5)));
}

TEST_F(SessionsCtlTest, MalformedIdsAndFiltersKillNothing) {
  FerryInstance ferry(config());
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const int a = open_client(web_port_);
  const int b = open_client(web_port_, "127.0.0.2");
  const pid_t worker = *ferry.workers().begin();
  const std::vector<std::string> lines = {"kill session 12",
                                          "kill session x:1",
                                          "kill session " + std::to_string(worker) + ":0",
                                          "kill session " + std::to_string(worker) + ":abc",
                                          "kill session 1:1",
                                          "kill session " + std::to_string(worker) + ":1 extra",
                                          "kill sessions client nonsense",
                                          "kill sessions client 127.0.0.2 more",
                                          "kill sessions client",
                                          "show sessions client x",
                                          "show sessions server app",
                                          "show sessions proxy nosuch",
                                          "show sessions proxy",
                                          "show sessions colour red"};
  for (const std::string& words : lines) {
    const Finished f = ferry.ctl(words);
    EXPECT_EQ(f.exit_code, 1) << words << ": " << f.out;
    EXPECT_EQ(f.err.rfind("ferry: ", 0), 0u) << words << ": " << f.err;
    EXPECT_EQ(count_of(f.err, "\n"), 1u) << words << ": " << f.err;
  }
  EXPECT_TRUE(echo_round_trip(a, "alive"));
  EXPECT_TRUE(echo_round_trip(b, "alive"));
  EXPECT_EQ(show(ferry).size(), 2u);
}

TEST_F(SessionsCtlTest, ConcurrentRequestsGetTheirOwnAnswers) {
  FerryInstance ferry(config());
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const int a = open_client(web_port_);
  open_client(alt_port_);
  const std::string path = ferry.dir().path() + "/ferry.ctl";
  // Six askers at once: the master holds them all while the first is in flight.
  std::vector<event::UniqueFd> askers;
  for (int i = 0; i < 6; ++i) {
    event::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    std::strncpy(sun.sun_path, path.c_str(), sizeof sun.sun_path - 1);
    ASSERT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&sun), sizeof sun), 0);
    ASSERT_TRUE(send_all(fd.get(), std::string("show sessions proxy ") +
                                       (i % 2 == 0 ? "web" : "alt") + " --json\n"));
    askers.push_back(std::move(fd));
  }
  for (int i = 0; i < 6; ++i) {
    const std::string answer = read_exactly(askers[i].get(), 1 << 20, seconds(5));
    ASSERT_EQ(answer.rfind("ok ", 0), 0u) << answer;
    const auto rows = parse_rows(answer.substr(answer.find('\n') + 1));
    ASSERT_EQ(rows.size(), 1u) << answer;
    EXPECT_EQ(rows[0].at("proxy"), i % 2 == 0 ? "web" : "alt") << answer;
  }
  EXPECT_TRUE(echo_round_trip(a, "alive"));
}

// A worker that cannot answer (stopped) is named, the other's sessions are listed, and its late
// answer to that request is not taken for its answer to the next one.
TEST_F(SessionsCtlTest, ASilentWorkerIsNamedAndItsLateAnswerMixesWithNothing) {
  FerryInstance ferry(config());
  ASSERT_TRUE(ferry.start()) << ferry.log();
  std::vector<int> clients;
  for (int i = 0; i < 6; ++i) clients.push_back(open_client(web_port_));
  const auto all = show(ferry);
  ASSERT_EQ(all.size(), 6u);
  const pid_t stopped = std::stoi(all[0].at("worker"));
  std::size_t theirs = 0;
  for (const Row& r : all) theirs += r.at("worker") == std::to_string(stopped) ? 1 : 0;
  ASSERT_EQ(::kill(stopped, SIGSTOP), 0);
  const Finished partial = ferry.ctl("show sessions");
  ::kill(stopped, SIGCONT);
  EXPECT_EQ(partial.exit_code, 0) << partial.err;
  EXPECT_NE(partial.out.find("worker pid " + std::to_string(stopped) + " did not answer"),
            std::string::npos)
      << partial.out;
  // The header, the other worker's sessions, the note.
  EXPECT_EQ(count_of(partial.out, "\n"), 1 + (6 - theirs) + 1) << partial.out;
  // The next requests see everything, each its own answer.
  EXPECT_EQ(show(ferry).size(), 6u);
  EXPECT_EQ(show(ferry, "proxy alt").size(), 0u);
  EXPECT_EQ(show(ferry).size(), 6u);
  for (int fd : clients) EXPECT_TRUE(echo_round_trip(fd, "alive"));
}

TEST_F(SessionsCtlTest, AReaderMayShowButNotKill) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to become another user";
  const passwd* nobody = ::getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  FerryInstance ferry(config("control_readers = [\"nobody\"];"));
  ASSERT_TRUE(ferry.start()) << ferry.log();
  const std::string path = ferry.dir().path() + "/ferry.ctl";
  ASSERT_EQ(::chmod(ferry.dir().path().c_str(), 0755), 0);
  ASSERT_EQ(::chmod(path.c_str(), 0666), 0);
  const int a = open_client(web_port_, "127.0.0.2");
  const std::string refused = "error\nferry: refused: uid " + std::to_string(nobody->pw_uid);
  // 0: shown with the session in it; 1: refused as a reader; 2: anything else.
  const auto as_nobody = [&](const std::string& line) {
    const pid_t child = ::fork();
    if (child == 0) {
      if (::setgid(nobody->pw_gid) == -1 || ::setuid(nobody->pw_uid) == -1) ::_exit(3);
      const std::string answer = ask(path, line);
      if (answer.rfind("ok ", 0) == 0)
        ::_exit(answer.find("127.0.0.2") != std::string::npos ? 0 : 2);
      ::_exit(answer.rfind(refused, 0) == 0 ? 1 : 2);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  EXPECT_EQ(as_nobody("show sessions"), 0) << ferry.log();
  EXPECT_EQ(as_nobody("show sessions --json"), 0) << ferry.log();
  EXPECT_EQ(as_nobody("kill sessions client 127.0.0.2"), 1) << ferry.log();
  const auto rows = show(ferry);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(as_nobody("kill session " + rows[0].at("id")), 1) << ferry.log();
  EXPECT_TRUE(echo_round_trip(a, "alive"));
  EXPECT_EQ(show(ferry).size(), 1u);
}

}  // namespace
}  // namespace ferry::test
