// Tests of worker/proxy/session_record: a batch of SessionRecords and a list of MoveAnswers
// survive the wire form field for field (IPv4, IPv6 and no address, held bytes or none, several
// records), encoded_size() is what append_record() adds, and every malformed input is refused
// with its reason: another kind or version, each truncation, trailing bytes, lengths past the
// end, out-of-range flags, states, families and verdicts, names too long.
#include "worker/proxy/session_record.h"

#include <netinet/in.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

namespace ferry::worker {
namespace {

using event::SocketAddress;
using Bytes = std::vector<std::byte>;

SocketAddress addr(std::string_view text) {
  const auto a = SocketAddress::parse_numeric(text);
  EXPECT_TRUE(a) << text;
  return a.value_or(SocketAddress{});
}

Bytes held(std::size_t n, unsigned seed) {
  Bytes b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = std::byte((i * 131 + seed) & 0xff);
  return b;
}

// A record with its addresses; a server's address also names it, unless there is none.
SessionRecord record(std::uint32_t id, std::string proxy, std::string_view listen,
                     std::string_view client, std::string_view server = {}) {
  SessionRecord r;
  r.id = id;
  r.proxy = std::move(proxy);
  r.listen = addr(listen);
  r.client = addr(client);
  if (!server.empty()) {
    r.server = std::string(server);
    r.server_address = addr(server);
  }
  return r;
}

// Every field away from its default, so that a field the decoder skipped shows.
SessionRecord ipv4_record() {
  SessionRecord r =
      record(0x01020304, "web", "127.0.0.1:8080", "10.1.2.3:54321", "192.168.7.8:9000");
  r.server = "app-1:9000";
  r.started_ms = 123'456'789;
  r.wall_start_ns = 1'700'000'000'123'456'789;
  r.idle_ms = 42;
  r.header_out = 28;
  r.moves = 2;
  r.counted = true;
  r.limit_bucket = 0xdeadbeef;
  r.up = {.state = 1, .splice_ok = true, .total = 0x1122334455667788, .held = held(100, 1)};
  r.down = {.state = 0, .splice_ok = false, .total = 7, .held = held(3, 2)};
  return r;
}

// The longest name taken, times before the clock's origin (the monotonic clock's is the boot:
// any value is taken), one direction finished and the other draining.
SessionRecord ipv6_record() {
  SessionRecord r =
      record(77, std::string(4096, 'p'), "[::1]:443", "[2001:db8::5]:65535", "[2001:db8::9]:8443");
  r.started_ms = -5;
  r.wall_start_ns = -1;
  r.moves = 0xffffffff;
  r.up = {.state = 2, .splice_ok = false, .total = 1, .held = {}};
  r.down = {.state = 1, .splice_ok = true, .total = 0, .held = held(1, 3)};
  return r;
}

// Not yet connected to a server: no server, no server address, nothing held.
SessionRecord unconnected_record() { return record(0, "", "0.0.0.0:7000", "[::ffff:1.2.3.4]:1"); }

Bytes batch_of(const std::vector<SessionRecord>& records) {
  Bytes out;
  begin_batch(out);
  for (const auto& r : records) append_record(out, r);
  return out;
}

std::vector<SessionRecord> decoded(const Bytes& in) {
  std::vector<SessionRecord> out;
  std::string why;
  EXPECT_TRUE(decode_batch(in, out, why)) << why;
  EXPECT_EQ(why, "");
  return out;
}

// The reason `decode` refuses `in` for; checks that nothing is handed out with it.
template <typename T>
std::string refused(bool (*decode)(std::span<const std::byte>, std::vector<T>&, std::string&),
                    std::span<const std::byte> in) {
  std::vector<T> out(1);
  std::string why;
  EXPECT_FALSE(decode(in, out, why));
  EXPECT_TRUE(out.empty());
  return why;
}
std::string refusal(std::span<const std::byte> in) {
  return refused<SessionRecord>(decode_batch, in);
}
std::string answers_refusal(std::span<const std::byte> in) {
  return refused<MoveAnswer>(decode_answers, in);
}

// Where a field of the first record of a batch sits: the batch's header (kind, version, count)
// and the record's length come first, then the id and the proxy's name.
constexpr std::size_t kBatchHeader = 4;
std::size_t listen_code_at(const SessionRecord& first) {
  return kBatchHeader + 4 + 4 + 2 + first.proxy.size();
}
// From the end of a batch whose last record is `last`: its route (three texts) ends it, the
// directions come before (state, splice, total, held length, held bytes each), the counted flag
// and limit_bucket before them.
constexpr std::size_t kDirectionFixed = 1 + 1 + 8 + 4;
std::size_t route_size(const SessionRecord& r) {
  return 3 * 2 + r.upstream.size() + r.route.size() + r.sni.size();
}
std::size_t down_state_at(const Bytes& b, const SessionRecord& last) {
  return b.size() - route_size(last) - kDirectionFixed - last.down.held.size();
}
std::size_t up_state_at(const Bytes& b, const SessionRecord& last) {
  return down_state_at(b, last) - kDirectionFixed - last.up.held.size();
}
std::size_t counted_at(const Bytes& b, const SessionRecord& last) {
  return up_state_at(b, last) - 4 - 1;
}

// Why a batch of `r` alone is refused with the byte at `at` set to `value`.
using Offset = std::size_t (*)(const Bytes&, const SessionRecord&);
std::string refusal_with(const SessionRecord& r, Offset at, std::byte value) {
  Bytes b = batch_of({r});
  b[at(b, r)] = value;
  return refusal(b);
}
constexpr Offset kDirectionStates[] = {up_state_at, down_state_at};

void put_u32(Bytes& b, std::size_t at, std::uint32_t v) {
  for (std::size_t i = 0; i < 4; ++i) b[at + i] = std::byte((v >> (8 * i)) & 0xff);
}

TEST(SessionRecordTest, OneRecordRoundTripsFieldForField) {
  for (const SessionRecord& r : {ipv4_record(), ipv6_record(), unconnected_record()}) {
    const auto back = decoded(batch_of({r}));
    ASSERT_EQ(back.size(), 1U);
    EXPECT_TRUE(back[0] == r) << r.id;
    // operator== is every field; spot checks that it compares what it should.
    EXPECT_EQ(back[0].proxy, r.proxy);
    EXPECT_EQ(back[0].client.to_string(), r.client.to_string());
    EXPECT_EQ(back[0].server_address.family(), r.server_address.family());
    EXPECT_EQ(back[0].up.held, r.up.held);
    EXPECT_EQ(back[0].down.held, r.down.held);
  }
  const auto v4 = decoded(batch_of({ipv4_record()}))[0];
  EXPECT_EQ(v4.listen.to_string(), "127.0.0.1:8080");
  EXPECT_EQ(v4.server_address.to_string(), "192.168.7.8:9000");
  EXPECT_EQ(v4.up.total, 0x1122334455667788U);
  EXPECT_EQ(v4.limit_bucket, 0xdeadbeefU);
  const auto v6 = decoded(batch_of({ipv6_record()}))[0];
  EXPECT_EQ(v6.client.to_string(), "[2001:db8::5]:65535");
  EXPECT_EQ(v6.started_ms, -5);
  EXPECT_EQ(v6.moves, 0xffffffffU);
  const auto none = decoded(batch_of({unconnected_record()}))[0];
  EXPECT_EQ(none.server_address.family(), AF_UNSPEC);
  EXPECT_TRUE(none.server_address == SocketAddress{});
  EXPECT_TRUE(none.server.empty());
  EXPECT_TRUE(none.up.held.empty() && none.down.held.empty());
}

TEST(SessionRecordTest, SeveralRecordsInOneBatchKeepTheirOrder) {
  const std::vector<SessionRecord> records = {ipv4_record(), unconnected_record(), ipv6_record(),
                                              ipv4_record()};
  const Bytes b = batch_of(records);
  EXPECT_EQ(b[2], std::byte{4});  // the count, little-endian
  EXPECT_EQ(b[3], std::byte{0});
  EXPECT_TRUE(decoded(b) == records);
  EXPECT_TRUE(decoded(batch_of({})).empty());
}

TEST(SessionRecordTest, TheHeaderAndIntegersAreLittleEndian) {
  const Bytes b = batch_of({ipv4_record()});
  EXPECT_EQ(b[0], std::byte{'S'});
  EXPECT_EQ(b[1], std::byte{kSessionRecordVersion});
  EXPECT_EQ(b[2], std::byte{1});
  EXPECT_EQ(b[3], std::byte{0});
  // The record's length (all after it), then the id.
  const auto len = static_cast<std::uint32_t>(b.size() - kBatchHeader - 4);
  EXPECT_EQ(b[4], std::byte(len & 0xff));
  EXPECT_EQ(b[5], std::byte((len >> 8) & 0xff));
  EXPECT_EQ(b[8], std::byte{0x04});
  EXPECT_EQ(b[11], std::byte{0x01});
  // The listen address: code 4, then its sockaddr_in.
  EXPECT_EQ(b[listen_code_at(ipv4_record())], std::byte{4});
}

TEST(SessionRecordTest, EncodedSizeIsWhatAppendRecordAdds) {
  Bytes b;
  begin_batch(b);
  EXPECT_EQ(b.size(), kBatchHeader);
  for (const SessionRecord& r :
       {ipv4_record(), ipv6_record(), unconnected_record(), SessionRecord{}}) {
    const std::size_t before = b.size();
    append_record(b, r);
    EXPECT_EQ(b.size() - before, encoded_size(r)) << r.id;
  }
  // begin_batch() starts over.
  begin_batch(b);
  EXPECT_EQ(b.size(), kBatchHeader);
  EXPECT_TRUE(decoded(b).empty());
}

TEST(SessionRecordTest, AnotherKindOrVersionIsRefused) {
  Bytes b = batch_of({ipv4_record()});
  b[0] = std::byte{'A'};
  EXPECT_EQ(refusal(b), "not a batch");
  b[0] = std::byte{'S'};
  b[1] = std::byte{kSessionRecordVersion + 1};
  EXPECT_EQ(refusal(b), "another version");
  b[1] = std::byte{0};
  EXPECT_EQ(refusal(b), "another version");
  // An answer is not a batch, nor a batch an answer.
  Bytes answers;
  const MoveAnswer one[] = {{.id = 1, .verdict = MoveVerdict::adopted}};
  encode_answers(one, answers);
  EXPECT_EQ(refusal(answers), "not a batch");
  EXPECT_EQ(answers_refusal(batch_of({})), "not an answer");
}

TEST(SessionRecordTest, EveryTruncationIsRefused) {
  const std::vector<std::vector<SessionRecord>> batches = {
      {}, {ipv4_record()}, {ipv4_record(), unconnected_record(), ipv6_record()}};
  for (const auto& records : batches) {
    const Bytes b = batch_of(records);
    // Every prefix, the empty one and those cut in the batch's header included.
    for (std::size_t n = 0; n < b.size(); ++n) {
      EXPECT_EQ(refusal(std::span(b).first(n)), "truncated") << n << " of " << b.size();
    }
  }
}

TEST(SessionRecordTest, BytesAfterTheLastRecordAreRefused) {
  const std::vector<std::vector<SessionRecord>> batches = {
      {}, {ipv4_record()}, {ipv4_record(), ipv6_record()}};
  for (const auto& records : batches) {
    Bytes b = batch_of(records);
    b.push_back(std::byte{0});
    EXPECT_EQ(refusal(b), "bytes after the last record");
  }
  // A count lower than the records sent leaves the others trailing.
  Bytes b = batch_of({ipv4_record(), ipv4_record()});
  b[2] = std::byte{1};
  EXPECT_EQ(refusal(b), "bytes after the last record");
}

TEST(SessionRecordTest, ARecordLengthMustBeTheRecordsOwn) {
  const SessionRecord r = ipv4_record();
  Bytes b = batch_of({r});
  const auto len = static_cast<std::uint32_t>(encoded_size(r) - 4);
  // Past the end of the batch: the largest value, and one byte past.
  put_u32(b, kBatchHeader, 0xffffffff);
  EXPECT_EQ(refusal(b), "truncated");
  put_u32(b, kBatchHeader, len + 1);
  EXPECT_EQ(refusal(b), "truncated");
  // Shorter than its fields: the record's own end cuts them.
  put_u32(b, kBatchHeader, len - 1);
  EXPECT_EQ(refusal(b), "truncated");
  // A longer length on a record that is not the last: bytes of the next are taken as its own.
  b = batch_of({r, r});
  put_u32(b, kBatchHeader, len + 4);
  EXPECT_EQ(refusal(b), "bytes after a record");
}

TEST(SessionRecordTest, AFlagIsZeroOrOne) {
  const SessionRecord r = ipv4_record();
  Bytes b = batch_of({r});
  ASSERT_EQ(b[counted_at(b, r)], std::byte{1});
  b[counted_at(b, r)] = std::byte{2};
  EXPECT_EQ(refusal(b), "a flag neither 0 nor 1");
  b = batch_of({r});
  const std::size_t splice_ok = up_state_at(b, r) + 1;
  ASSERT_EQ(b[splice_ok], std::byte{1});
  b[splice_ok] = std::byte{2};
  EXPECT_EQ(refusal(b), "a flag neither 0 nor 1");
  b[splice_ok] = std::byte{0xff};
  EXPECT_EQ(refusal(b), "a flag neither 0 nor 1");
}

TEST(SessionRecordTest, ADirectionStateIsOpenDrainingOrFinished) {
  SessionRecord r = ipv4_record();
  r.up.held.clear();
  r.down.held.clear();
  for (int state = 0; state <= 2; ++state) {
    r.down.state = static_cast<std::uint8_t>(state);
    EXPECT_EQ(decoded(batch_of({r}))[0].down.state, state);
  }
  for (const Offset at : kDirectionStates) {
    EXPECT_EQ(refusal_with(r, at, std::byte{3}), "a direction state out of range");
  }
}

TEST(SessionRecordTest, AFinishedDirectionHoldsNoBytes) {
  const SessionRecord r = ipv4_record();  // both directions hold bytes
  ASSERT_FALSE(r.up.held.empty());
  ASSERT_FALSE(r.down.held.empty());
  for (const Offset at : kDirectionStates) {
    EXPECT_EQ(refusal_with(r, at, std::byte{2}), "bytes held after the FIN was passed on");
  }
}

TEST(SessionRecordTest, MoreHeldBytesThanABufferAreRefusedBeforeBeingLookedFor) {
  const SessionRecord r = ipv4_record();
  Bytes b = batch_of({r});
  put_u32(b, down_state_at(b, r) + 1 + 1 + 8, (64U << 20) + 1);
  EXPECT_EQ(refusal(b), "more held bytes than a buffer has");
}

TEST(SessionRecordTest, AnAddressIsOfAKnownFamilyAndItsCodesOwn) {
  const SessionRecord r = ipv4_record();
  const std::size_t code = listen_code_at(r);
  Bytes b = batch_of({r});
  b[code] = std::byte{5};
  EXPECT_EQ(refusal(b), "an address of an unknown family");
  // Code 4 before a sockaddr_in whose family says AF_INET6.
  b = batch_of({r});
  ASSERT_EQ(b[code + 1], std::byte{AF_INET});  // sa_family_t, little-endian here
  b[code + 1] = std::byte{AF_INET6};
  EXPECT_EQ(refusal(b), "an address of another family");
  // Code 6 before a sockaddr_in6 whose family says AF_INET.
  const SessionRecord r6 = ipv6_record();
  const std::size_t code6 = listen_code_at(r6);
  b = batch_of({r6});
  ASSERT_EQ(b[code6], std::byte{6});
  b[code6 + 1] = std::byte{AF_INET};
  EXPECT_EQ(refusal(b), "an address of another family");
  // Code 6 before the 16 bytes of a sockaddr_in: 28 bytes are taken, and their first two still
  // say AF_INET.
  b = batch_of({r});
  b[code] = std::byte{6};
  EXPECT_EQ(refusal(b), "an address of another family");
}

TEST(SessionRecordTest, ANameLongerThan4096IsRefused) {
  SessionRecord r = ipv4_record();
  r.proxy = std::string(4097, 'x');
  EXPECT_EQ(refusal(batch_of({r})), "a name too long");
  r = ipv4_record();
  r.server = std::string(5000, 'x');
  EXPECT_EQ(refusal(batch_of({r})), "a name too long");
  r.server = std::string(4096, 'x');
  EXPECT_TRUE(decoded(batch_of({r})) == std::vector<SessionRecord>{r});
}

TEST(SessionRecordTest, ANegativeIdleTimeIsRefused) {
  SessionRecord r = ipv4_record();
  r.idle_ms = -1;
  EXPECT_EQ(refusal(batch_of({r})), "a negative idle time");
}

TEST(SessionRecordTest, TheFirstReasonIsKept) {
  // A state out of range and held bytes of a finished direction would both be said: the first.
  const SessionRecord r = ipv4_record();
  Bytes b = batch_of({r});
  b[counted_at(b, r)] = std::byte{9};
  b[down_state_at(b, r)] = std::byte{3};
  EXPECT_EQ(refusal(b), "a flag neither 0 nor 1");
}

TEST(MoveAnswerTest, AnswersRoundTrip) {
  const std::vector<MoveAnswer> answers = {{.id = 0, .verdict = MoveVerdict::adopted},
                                           {.id = 0xffffffff, .verdict = MoveVerdict::refused},
                                           {.id = 12345, .verdict = MoveVerdict::adopted}};
  Bytes b;
  encode_answers(answers, b);
  EXPECT_EQ(b.size(), 4 + answers.size() * 5);
  EXPECT_EQ(b[0], std::byte{'A'});
  EXPECT_EQ(b[1], std::byte{kMoveAnswerVersion});
  std::vector<MoveAnswer> back;
  std::string why;
  ASSERT_TRUE(decode_answers(b, back, why)) << why;
  EXPECT_TRUE(back == answers);
  // None at all; encode_answers() starts `out` over.
  encode_answers({}, b);
  ASSERT_TRUE(decode_answers(b, back, why)) << why;
  EXPECT_TRUE(back.empty());
}

TEST(MoveAnswerTest, EveryTruncationAndTrailingBytesAreRefused) {
  const std::vector<MoveAnswer> answers = {{.id = 1, .verdict = MoveVerdict::adopted},
                                           {.id = 2, .verdict = MoveVerdict::refused}};
  Bytes b;
  encode_answers(answers, b);
  for (std::size_t n = 0; n < b.size(); ++n) {
    EXPECT_EQ(answers_refusal(std::span(b).first(n)), "truncated") << n;
  }
  b.push_back(std::byte{0});
  EXPECT_EQ(answers_refusal(b), "bytes after the last answer");
}

TEST(MoveAnswerTest, AnotherVersionOrAVerdictOutOfRangeIsRefused) {
  const std::vector<MoveAnswer> answers = {{.id = 1, .verdict = MoveVerdict::adopted},
                                           {.id = 2, .verdict = MoveVerdict::refused}};
  Bytes b;
  encode_answers(answers, b);
  b[1] = std::byte{kMoveAnswerVersion + 1};
  EXPECT_EQ(answers_refusal(b), "another version");
  encode_answers(answers, b);
  b.back() = std::byte{2};  // the second answer's verdict
  EXPECT_EQ(answers_refusal(b), "a verdict out of range");
  b.back() = std::byte{0xff};
  EXPECT_EQ(answers_refusal(b), "a verdict out of range");
}

}  // namespace
}  // namespace ferry::worker

namespace ferry::worker {
namespace {

// Issue 22: a routed session carries its route; a batch of version 1 (before routes) still
// decodes, its sessions unrouted, so that a binary upgrade from it still moves them.
TEST(SessionRecordTest, ARouteTravelsAndVersionOneBatchesStillDecode) {
  SessionRecord routed = ipv4_record();
  routed.upstream = "tls-backends";
  routed.route = "alpha";
  routed.sni = "a.test";
  const std::vector<SessionRecord> back = decoded(batch_of({routed}));
  ASSERT_EQ(back.size(), 1U);
  EXPECT_EQ(back[0], routed);

  const SessionRecord plain = ipv4_record();
  Bytes b = batch_of({plain});
  // Version 1 had no route: three empty texts (a 2-byte length each) fewer at the end.
  ASSERT_GT(b.size(), 6U);
  b.erase(b.end() - 6, b.end());
  b[1] = std::byte{1};
  const std::size_t len_at = kBatchHeader;
  const auto len = static_cast<std::uint32_t>(b[len_at]) | static_cast<std::uint32_t>(b[len_at + 1])
                                                               << 8;
  b[len_at] = static_cast<std::byte>((len - 6) & 0xff);
  b[len_at + 1] = static_cast<std::byte>((len - 6) >> 8);
  const std::vector<SessionRecord> old = decoded(b);
  ASSERT_EQ(old.size(), 1U);
  EXPECT_EQ(old[0], plain);
}

}  // namespace
}  // namespace ferry::worker
