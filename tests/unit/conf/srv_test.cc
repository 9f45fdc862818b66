// Tests of conf/srv: the SRV answer parser on wire-format responses built here (compression
// pointers, additional A/AAAA records, error codes, malformed records), and the endpoints the
// records give (ports, weights, priority classes, targets resolved by name).
#include "conf/srv.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace ferry::conf {
namespace {

// A DNS response in wire format, written a record at a time.
class Message {
 public:
  static constexpr std::uint16_t kA = 1, kCname = 5, kSrv = 33, kAaaa = 28;

  explicit Message(const std::string& question, int rcode = 0) {
    put16(0x1234);                                      // id
    put16(static_cast<std::uint16_t>(0x8180 | rcode));  // response, RD, RA, rcode
    put16(1);                                           // questions
    counts_at_ = bytes_.size();
    put16(0);  // answers
    put16(0);  // authority
    put16(0);  // additional
    question_at_ = bytes_.size();
    put_name(question);
    put16(kSrv);
    put16(1);  // IN
  }

  // An answer record of type SRV; `compress` writes the owner as a pointer to the question.
  Message& srv(std::uint16_t priority, std::uint16_t weight, std::uint16_t port,
               const std::string& target, const std::string& owner = {}) {
    begin_record(owner, kSrv, 0);
    const std::size_t length_at = bytes_.size() - 2;
    put16(priority);
    put16(weight);
    put16(port);
    put_name(target);
    end_record(length_at);
    return *this;
  }
  // An SRV record whose target is a pointer to the name at `offset`.
  Message& srv_pointing(std::uint16_t port, std::size_t offset) {
    begin_record({}, kSrv, 0);
    const std::size_t length_at = bytes_.size() - 2;
    put16(10);
    put16(5);
    put16(port);
    put16(static_cast<std::uint16_t>(0xc000 | offset));
    end_record(length_at);
    return *this;
  }
  // A record of any type with the given data, in the answer (0) or additional (2) section.
  Message& raw(const std::string& owner, std::uint16_t type, const std::vector<unsigned char>& rd,
               int section = 0) {
    begin_record(owner, type, section);
    const std::size_t length_at = bytes_.size() - 2;
    bytes_.insert(bytes_.end(), rd.begin(), rd.end());
    end_record(length_at);
    return *this;
  }
  Message& a(const std::string& owner, const char* ip) {
    std::vector<unsigned char> rd(4);
    inet_pton(AF_INET, ip, rd.data());
    return raw(owner, kA, rd, 2);
  }
  Message& aaaa(const std::string& owner, const char* ip) {
    std::vector<unsigned char> rd(16);
    inet_pton(AF_INET6, ip, rd.data());
    return raw(owner, kAaaa, rd, 2);
  }

  [[nodiscard]] std::size_t question_offset() const { return question_at_; }
  [[nodiscard]] std::span<const unsigned char> wire() const { return bytes_; }
  std::vector<unsigned char>& bytes() { return bytes_; }

 private:
  void put16(std::uint16_t v) {
    bytes_.push_back(static_cast<unsigned char>(v >> 8));
    bytes_.push_back(static_cast<unsigned char>(v & 0xff));
  }
  void put_name(const std::string& name) {
    std::size_t at = name == "." ? 1 : 0;  // the root: its empty label only
    while (at < name.size()) {
      std::size_t dot = name.find('.', at);
      if (dot == std::string::npos) dot = name.size();
      bytes_.push_back(static_cast<unsigned char>(dot - at));
      bytes_.insert(bytes_.end(), name.begin() + static_cast<long>(at),
                    name.begin() + static_cast<long>(dot));
      at = dot + 1;
    }
    bytes_.push_back(0);
  }
  void begin_record(const std::string& owner, std::uint16_t type, int section) {
    if (owner.empty()) {
      put16(static_cast<std::uint16_t>(0xc000 | question_at_));  // the question's name
    } else {
      put_name(owner);
    }
    put16(type);
    put16(1);  // IN
    put16(0);
    put16(300);  // TTL
    put16(0);    // length, filled in by end_record()
    const std::size_t at = counts_at_ + 2 * static_cast<std::size_t>(section);
    const auto n = static_cast<std::uint16_t>((bytes_[at] << 8 | bytes_[at + 1]) + 1);
    bytes_[at] = static_cast<unsigned char>(n >> 8);
    bytes_[at + 1] = static_cast<unsigned char>(n & 0xff);
  }
  void end_record(std::size_t length_at) {
    const std::size_t n = bytes_.size() - length_at - 2;
    bytes_[length_at] = static_cast<unsigned char>(n >> 8);
    bytes_[length_at + 1] = static_cast<unsigned char>(n & 0xff);
  }

  std::vector<unsigned char> bytes_;
  std::size_t counts_at_ = 0;
  std::size_t question_at_ = 0;
};

SrvAnswer ok(const Parsed<SrvAnswer>& p) {
  if (const auto* why = std::get_if<std::string>(&p)) ADD_FAILURE() << *why;
  return std::holds_alternative<SrvAnswer>(p) ? std::get<SrvAnswer>(p) : SrvAnswer{};
}
template <typename T>
std::string why(const Parsed<T>& p) {
  return std::holds_alternative<T>(p) ? "(parsed)" : std::get<std::string>(p);
}

// A lookup that must not be asked: every target is in the additional section.
Parsed<std::vector<Address>> no_lookup(const std::string& target, std::uint16_t) {
  ADD_FAILURE() << "looked up " << target;
  return std::string("not asked");
}

// A lookup answering from a fixed table of IPv4 addresses.
TargetLookup table(std::map<std::string, std::vector<const char*>> names) {
  return [names](const std::string& target, std::uint16_t port) -> Parsed<std::vector<Address>> {
    const auto it = names.find(target);
    if (it == names.end()) return "host \"" + target + "\" not found";
    std::vector<Address> out;
    for (const char* ip : it->second) {
      Address a;
      sockaddr_in sin{};
      sin.sin_family = AF_INET;
      sin.sin_port = htons(port);
      inet_pton(AF_INET, ip, &sin.sin_addr);
      std::memcpy(&a.storage, &sin, sizeof sin);
      a.length = sizeof sin;
      a.text = std::string(ip) + ":" + std::to_string(port);
      out.push_back(a);
    }
    return out;
  };
}

std::vector<std::string> texts(const std::vector<Endpoint>& endpoints) {
  std::vector<std::string> out;
  for (const Endpoint& e : endpoints) {
    out.push_back(e.address.text + " w" + std::to_string(e.weight) + (e.backup ? " backup" : ""));
  }
  return out;
}

TEST(SrvAnswerTest, ReadsEveryRecordWithCompressedNames) {
  Message m("_pg._tcp.db.service.test");
  m.srv(10, 60, 5432, "Node-A.db.service.test").srv(10, 20, 5433, "node-b.db.service.test.");
  // The third target is a pointer into the question: "db.service.test" is its suffix.
  m.srv_pointing(5434, m.question_offset() + 9);
  const SrvAnswer a = ok(parse_srv_answer(m.wire()));
  ASSERT_EQ(a.records.size(), 3U);
  EXPECT_EQ(a.records[0], (SrvRecord{10, 60, 5432, "node-a.db.service.test"}));
  EXPECT_EQ(a.records[1], (SrvRecord{10, 20, 5433, "node-b.db.service.test"}));
  EXPECT_EQ(a.records[2], (SrvRecord{10, 5, 5434, "db.service.test"}));
  EXPECT_TRUE(a.additional.empty());
}

TEST(SrvAnswerTest, ReadsTheAdditionalAddresses) {
  Message m("_pg._tcp.db.test");
  m.srv(1, 1, 80, "a.db.test").srv(1, 1, 81, "b.db.test");
  m.a("A.db.test", "10.0.0.1").a("a.db.test", "10.0.0.2").aaaa("a.db.test", "2001:db8::1");
  m.a("a.db.test", "10.0.0.1");                   // repeated: once
  m.raw("a.db.test", Message::kA, {1, 2, 3}, 2);  // a bad length: left out
  const SrvAnswer a = ok(parse_srv_answer(m.wire()));
  ASSERT_EQ(a.additional.count("a.db.test"), 1U);
  const auto& list = a.additional.at("a.db.test");
  ASSERT_EQ(list.size(), 3U);
  EXPECT_EQ(list[0].text, "10.0.0.1");
  EXPECT_EQ(list[1].text, "10.0.0.2");
  EXPECT_EQ(list[2].text, "2001:db8::1");
  EXPECT_EQ(a.additional.count("b.db.test"), 0U);
}

TEST(SrvAnswerTest, SkipsOtherRecordsAndTheRootTarget) {
  Message m("_pg._tcp.db.test");
  m.raw({}, Message::kCname, {0});                 // not an SRV record: ignored
  m.srv(0, 0, 80, ".").srv(1, 1, 0, "zero.port");  // "not offered here", and no port
  m.srv(2, 3, 443, "web.test");
  const SrvAnswer a = ok(parse_srv_answer(m.wire()));
  ASSERT_EQ(a.records.size(), 1U);
  EXPECT_EQ(a.records[0].target, "web.test");
}

TEST(SrvAnswerTest, SaysWhyAResponseIsNoAnswer) {
  EXPECT_EQ(why(parse_srv_answer(Message("_x._tcp.test", 3).wire())),
            "the DNS server answered NXDOMAIN");
  EXPECT_EQ(why(parse_srv_answer(Message("_x._tcp.test", 2).wire())),
            "the DNS server answered SERVFAIL");
  EXPECT_EQ(why(parse_srv_answer(Message("_x._tcp.test").wire())), "no SRV records");

  Message cut("_x._tcp.test");
  cut.srv(1, 1, 80, "a.test");
  std::vector<unsigned char> bytes(cut.wire().begin(), cut.wire().end() - 3);
  EXPECT_EQ(why(parse_srv_answer(bytes)), "a malformed DNS response");
  EXPECT_EQ(why(parse_srv_answer(std::vector<unsigned char>{1, 2, 3})), "a malformed DNS response");

  Message small("_x._tcp.test");
  small.raw({}, Message::kSrv, {0, 1, 0, 1});  // shorter than priority, weight, port, name
  EXPECT_EQ(why(parse_srv_answer(small.wire())), "a malformed SRV record");

  // A target whose name runs past its record's data.
  Message past("_x._tcp.test");
  past.raw({}, Message::kSrv, {0, 1, 0, 1, 0, 80, 3, 'a', 'b', 'c'});
  past.srv(1, 1, 80, "b.test");
  EXPECT_EQ(why(parse_srv_answer(past.wire())), "a malformed SRV record");

  // A compression pointer that loops.
  Message loop("_x._tcp.test");
  loop.srv_pointing(80, 0);
  const std::size_t pointer_at = loop.bytes().size() - 2;
  loop.bytes()[pointer_at + 1] = static_cast<unsigned char>(pointer_at);
  EXPECT_EQ(why(parse_srv_answer(loop.wire())), "a malformed SRV record");
}

TEST(SrvEndpointsTest, PortsWeightsAndPriorityClassesComeFromTheRecords) {
  Message m("_pg._tcp.db.test");
  m.srv(20, 5, 7000, "c.db.test");   // a higher priority: backup
  m.srv(10, 0, 6000, "a.db.test");   // weight 0 serves as 1
  m.srv(10, 3, 6001, "b.db.test");   // two addresses, both weight 3
  m.srv(30, 65535, 7001, "d.test");  // clamped to the highest weight
  m.a("a.db.test", "10.0.0.1").a("b.db.test", "10.0.0.2").a("b.db.test", "10.0.0.3");
  m.a("c.db.test", "10.0.0.4").aaaa("d.test", "::1");
  const auto endpoints = endpoints_of(ok(parse_srv_answer(m.wire())), no_lookup);
  ASSERT_TRUE(std::holds_alternative<std::vector<Endpoint>>(endpoints)) << why(endpoints);
  const auto& list = std::get<std::vector<Endpoint>>(endpoints);
  EXPECT_EQ(texts(list),
            (std::vector<std::string>{"10.0.0.1:6000 w1", "10.0.0.2:6001 w3", "10.0.0.3:6001 w3",
                                      "10.0.0.4:7000 w5 backup", "[::1]:7001 w1000 backup"}));
  const auto* sin = reinterpret_cast<const sockaddr_in*>(list[1].address.sockaddr_ptr());
  EXPECT_EQ(ntohs(sin->sin_port), 6001);
  const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(list[4].address.sockaddr_ptr());
  EXPECT_EQ(list[4].address.length, sizeof(sockaddr_in6));
  EXPECT_EQ(ntohs(sin6->sin6_port), 7001);
}

TEST(SrvEndpointsTest, TargetsWithoutAdditionalAddressesAreLookedUp) {
  Message m("_pg._tcp.db.test");
  m.srv(1, 2, 80, "a.test").srv(1, 2, 81, "gone.test").srv(2, 1, 80, "b.test");
  m.a("b.test", "10.0.0.9");
  std::string skipped;
  const auto endpoints = endpoints_of(ok(parse_srv_answer(m.wire())),
                                      table({{"a.test", {"10.0.1.1", "10.0.1.2"}}}), &skipped);
  ASSERT_TRUE(std::holds_alternative<std::vector<Endpoint>>(endpoints)) << why(endpoints);
  EXPECT_EQ(
      texts(std::get<std::vector<Endpoint>>(endpoints)),
      (std::vector<std::string>{"10.0.1.1:80 w2", "10.0.1.2:80 w2", "10.0.0.9:80 w1 backup"}));
  EXPECT_EQ(skipped, "host \"gone.test\" not found");
}

// Each address keeps the target it came from (TLS origination verifies that name), whether the
// additional section or a lookup gave it.
TEST(SrvEndpointsTest, EachAddressKeepsItsTargetName) {
  Message m("_pg._tcp.db.test");
  m.srv(1, 1, 80, "a.test").srv(1, 1, 81, "B.Test");
  m.a("a.test", "10.0.0.1");
  const auto endpoints =
      endpoints_of(ok(parse_srv_answer(m.wire())), table({{"b.test", {"10.0.1.1"}}}));
  ASSERT_TRUE(std::holds_alternative<std::vector<Endpoint>>(endpoints)) << why(endpoints);
  const auto& list = std::get<std::vector<Endpoint>>(endpoints);
  ASSERT_EQ(list.size(), 2U);
  EXPECT_EQ(list[0].host, "a.test");
  EXPECT_EQ(list[1].host, "b.test") << "lower case, no trailing dot";
}

TEST(SrvEndpointsTest, AnAddressTwoRecordsGiveIsTakenFromThePreferredOne) {
  Message m("_pg._tcp.db.test");
  m.srv(5, 1, 80, "x.test").srv(1, 4, 80, "x.test");
  m.a("x.test", "10.0.0.1");
  const auto endpoints = endpoints_of(ok(parse_srv_answer(m.wire())), no_lookup);
  EXPECT_EQ(texts(std::get<std::vector<Endpoint>>(endpoints)),
            (std::vector<std::string>{"10.0.0.1:80 w4"}));
}

TEST(SrvEndpointsTest, NoTargetThatResolvesIsAnError) {
  Message m("_pg._tcp.db.test");
  m.srv(1, 1, 80, "a.test");
  EXPECT_EQ(why(endpoints_of(ok(parse_srv_answer(m.wire())), table({}))),
            "no target resolves: host \"a.test\" not found");
  Message root("_pg._tcp.db.test");
  root.srv(0, 0, 0, ".");
  EXPECT_EQ(why(endpoints_of(ok(parse_srv_answer(root.wire())), table({}))),
            "no usable SRV records (every target is \".\")");
}

TEST(SrvNameTest, KnowsTheFormOfAServiceName) {
  for (const char* good : {"_pg._tcp.db.service.consul", "_http._tcp.example.com.", "_x._udp.a"}) {
    EXPECT_TRUE(is_service_name(good)) << good;
  }
  for (const char* bad : {"", "pg._tcp.db", "_pg.tcp.db", "_pg._tcp", "_pg._tcp.", "_._tcp.db",
                          "_pg._tcp.d b", "db.example.com:5432"}) {
    EXPECT_FALSE(is_service_name(bad)) << bad;
  }
}

}  // namespace
}  // namespace ferry::conf
