// SessionRecord's wire form: little-endian integers, strings and buffered bytes with their
// length before them, addresses as their sockaddr. Every read is checked against what is left.
#include "worker/proxy/session_record.h"

#include <netinet/in.h>

#include <algorithm>
#include <cstring>

namespace ferry::worker {
namespace {

enum class Kind : std::uint8_t { sessions = 'S', answers = 'A' };
constexpr std::size_t kMaxName = 4096;
// A direction holds at most one buffer (conf's buffer_size, at most 64 MiB).
constexpr std::size_t kMaxHeld = std::size_t{64} << 20;
constexpr std::size_t kMaxCount = 65535;

class Writer {
 public:
  explicit Writer(std::vector<std::byte>& out) : out_(out) {}
  template <typename T>
  void num(T v) {
    for (std::size_t i = 0; i < sizeof(T); ++i) {
      out_.push_back(static_cast<std::byte>(static_cast<std::uint64_t>(v) >> (8 * i)));
    }
  }
  void bytes(std::span<const std::byte> b) { out_.insert(out_.end(), b.begin(), b.end()); }
  void text(const std::string& s) {
    num(static_cast<std::uint16_t>(s.size()));
    bytes(std::as_bytes(std::span(s.data(), s.size())));
  }
  void address(const event::SocketAddress& a) {
    const std::uint8_t code = a.family() == AF_INET ? 4 : a.family() == AF_INET6 ? 6 : 0;
    num(code);
    if (code == 4)
      bytes(std::as_bytes(std::span(reinterpret_cast<const char*>(a.get()), sizeof(sockaddr_in))));
    if (code == 6)
      bytes(std::as_bytes(std::span(reinterpret_cast<const char*>(a.get()), sizeof(sockaddr_in6))));
  }

 private:
  std::vector<std::byte>& out_;
};

class Reader {
 public:
  explicit Reader(std::span<const std::byte> in) : in_(in) {}
  [[nodiscard]] bool ok() const noexcept { return ok_; }
  [[nodiscard]] bool done() const noexcept { return at_ == in_.size(); }
  [[nodiscard]] const char* why() const noexcept { return why_; }
  void fail(const char* why) noexcept {
    if (ok_) why_ = why;
    ok_ = false;
  }
  template <typename T>
  T num() {
    if (!take(sizeof(T), "truncated")) return T{};
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) {
      v |= static_cast<std::uint64_t>(in_[at_ + i]) << (8 * i);
    }
    at_ += sizeof(T);
    return static_cast<T>(v);
  }
  std::span<const std::byte> bytes(std::size_t n) {
    if (!take(n, "truncated")) return {};
    const auto s = in_.subspan(at_, n);
    at_ += n;
    return s;
  }
  std::string text() {
    const auto n = num<std::uint16_t>();
    if (n > kMaxName) fail("a name too long");
    const auto b = bytes(n);
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
  }
  event::SocketAddress address() {
    const auto code = num<std::uint8_t>();
    if (code == 0) return {};
    const std::size_t len = code == 4 ? sizeof(sockaddr_in) : code == 6 ? sizeof(sockaddr_in6) : 0;
    if (len == 0) {
      fail("an address of an unknown family");
      return {};
    }
    const auto b = bytes(len);
    if (!ok_) return {};
    event::SocketAddress a(reinterpret_cast<const sockaddr*>(b.data()),
                           static_cast<socklen_t>(len));
    if (a.family() != (code == 4 ? AF_INET : AF_INET6)) fail("an address of another family");
    return a;
  }
  bool flag() {
    const auto v = num<std::uint8_t>();
    if (v > 1) fail("a flag neither 0 nor 1");
    return v == 1;
  }

 private:
  bool take(std::size_t n, const char* why) noexcept {
    if (!ok_) return false;
    if (n > in_.size() - at_) {
      fail(why);
      return false;
    }
    return true;
  }
  std::span<const std::byte> in_;
  std::size_t at_ = 0;
  bool ok_ = true;
  const char* why_ = "";
};

std::size_t address_size(const event::SocketAddress& a) noexcept {
  return 1 + (a.family() == AF_INET    ? sizeof(sockaddr_in)
              : a.family() == AF_INET6 ? sizeof(sockaddr_in6)
                                       : 0);
}

void write_direction(Writer& w, const DirectionRecord& d) {
  w.num(d.state);
  w.num(static_cast<std::uint8_t>(d.splice_ok));
  w.num(d.total);
  w.num(static_cast<std::uint32_t>(d.held.size()));
  w.bytes(d.held);
}

void read_direction(Reader& r, DirectionRecord& d) {
  d.state = r.num<std::uint8_t>();
  if (d.state > 2) r.fail("a direction state out of range");
  d.splice_ok = r.flag();
  d.total = r.num<std::uint64_t>();
  const auto n = r.num<std::uint32_t>();
  if (n > kMaxHeld) r.fail("more held bytes than a buffer has");
  const auto b = r.bytes(n);
  d.held.assign(b.begin(), b.end());
  // A finished direction has passed everything on.
  if (d.state == 2 && !d.held.empty()) r.fail("bytes held after the FIN was passed on");
}

}  // namespace

bool encodable(const SessionRecord& r) noexcept {
  auto address_ok = [](const event::SocketAddress& a) {
    return a.family() == AF_INET || a.family() == AF_INET6 || a.family() == AF_UNSPEC;
  };
  return r.proxy.size() <= kMaxName && r.server.size() <= kMaxName &&
         r.upstream.size() <= kMaxName && r.route.size() <= kMaxName && r.sni.size() <= kMaxName &&
         address_ok(r.listen) && address_ok(r.client) && address_ok(r.server_address) &&
         r.up.held.size() <= kMaxHeld && r.down.held.size() <= kMaxHeld;
}

void begin_batch(std::vector<std::byte>& out) {
  out.clear();
  Writer w(out);
  w.num(static_cast<std::uint8_t>(Kind::sessions));
  w.num(kSessionRecordVersion);
  w.num(std::uint16_t{0});  // the count, kept up by append_record
}

std::size_t encoded_size(const SessionRecord& r) noexcept {
  return 4 + 4 + 2 + r.proxy.size() + address_size(r.listen) + address_size(r.client) + 2 +
         r.server.size() + address_size(r.server_address) + 8 * 3 + 4 * 2 + 1 + 4 +
         2 * (1 + 1 + 8 + 4) + r.up.held.size() + r.down.held.size() + 3 * 2 + r.upstream.size() +
         r.route.size() + r.sni.size();
}

void append_record(std::vector<std::byte>& out, const SessionRecord& r) {
  Writer w(out);
  w.num(static_cast<std::uint32_t>(encoded_size(r) - 4));
  w.num(r.id);
  w.text(r.proxy);
  w.address(r.listen);
  w.address(r.client);
  w.text(r.server);
  w.address(r.server_address);
  w.num(r.started_ms);
  w.num(r.wall_start_ns);
  w.num(r.idle_ms);
  w.num(r.header_out);
  w.num(r.moves);
  w.num(static_cast<std::uint8_t>(r.counted));
  w.num(r.limit_bucket);
  write_direction(w, r.up);
  write_direction(w, r.down);
  w.text(r.upstream);
  w.text(r.route);
  w.text(r.sni);
  const auto count = static_cast<std::uint16_t>(static_cast<std::uint16_t>(out[2]) |
                                                static_cast<std::uint16_t>(out[3]) << 8);
  const auto next = static_cast<std::uint16_t>(count + 1);
  out[2] = static_cast<std::byte>(next & 0xff);
  out[3] = static_cast<std::byte>(next >> 8);
}

namespace {

// A message's kind, version (from `oldest` to `newest`) and count; the count is 0 once `r`
// failed.
std::uint16_t read_header(Reader& r, Kind kind, const char* not_it, std::uint8_t oldest,
                          std::uint8_t newest, std::uint8_t* version = nullptr) {
  if (r.num<std::uint8_t>() != static_cast<std::uint8_t>(kind)) r.fail(not_it);
  const auto v = r.ok() ? r.num<std::uint8_t>() : std::uint8_t{0};
  if (r.ok() && (v < oldest || v > newest)) r.fail("another version");
  if (version != nullptr) *version = v;
  const auto count = r.num<std::uint16_t>();
  return r.ok() ? count : 0;
}

}  // namespace

bool decode_batch(std::span<const std::byte> in, std::vector<SessionRecord>& out,
                  std::string& why) {
  out.clear();
  Reader r(in);
  std::uint8_t version = 0;
  const auto count =
      read_header(r, Kind::sessions, "not a batch", 1, kSessionRecordVersion, &version);
  for (std::size_t i = 0; r.ok() && i < count; ++i) {
    const auto len = r.num<std::uint32_t>();
    Reader body(r.bytes(len));
    if (!r.ok()) break;
    SessionRecord& s = out.emplace_back();
    s.id = body.num<std::uint32_t>();
    s.proxy = body.text();
    s.listen = body.address();
    s.client = body.address();
    s.server = body.text();
    s.server_address = body.address();
    s.started_ms = body.num<std::int64_t>();
    s.wall_start_ns = body.num<std::int64_t>();
    s.idle_ms = body.num<std::int64_t>();
    s.header_out = body.num<std::uint32_t>();
    s.moves = body.num<std::uint32_t>();
    s.counted = body.flag();
    s.limit_bucket = body.num<std::uint32_t>();
    read_direction(body, s.up);
    read_direction(body, s.down);
    if (version >= 2) {
      s.upstream = body.text();
      s.route = body.text();
      s.sni = body.text();
    }
    if (body.ok() && !body.done()) body.fail("bytes after a record");
    if (body.ok() && s.idle_ms < 0) body.fail("a negative idle time");
    if (!body.ok()) r.fail(body.why());
  }
  if (r.ok() && !r.done()) r.fail("bytes after the last record");
  if (!r.ok()) {
    why = r.why();
    out.clear();
    return false;
  }
  return true;
}

void encode_answers(std::span<const MoveAnswer> answers, std::vector<std::byte>& out) {
  out.clear();
  Writer w(out);
  w.num(static_cast<std::uint8_t>(Kind::answers));
  w.num(kMoveAnswerVersion);
  w.num(static_cast<std::uint16_t>(std::min(answers.size(), kMaxCount)));
  for (std::size_t i = 0; i < answers.size() && i < kMaxCount; ++i) {
    w.num(answers[i].id);
    w.num(static_cast<std::uint8_t>(answers[i].verdict));
  }
}

bool decode_answers(std::span<const std::byte> in, std::vector<MoveAnswer>& out, std::string& why) {
  out.clear();
  Reader r(in);
  const auto count =
      read_header(r, Kind::answers, "not an answer", kMoveAnswerVersion, kMoveAnswerVersion);
  for (std::size_t i = 0; r.ok() && i < count; ++i) {
    MoveAnswer a;
    a.id = r.num<std::uint32_t>();
    const auto v = r.num<std::uint8_t>();
    if (v > 1) r.fail("a verdict out of range");
    a.verdict = static_cast<MoveVerdict>(v);
    if (r.ok()) out.push_back(a);
  }
  if (r.ok() && !r.done()) r.fail("bytes after the last answer");
  if (!r.ok()) {
    why = r.why();
    out.clear();
    return false;
  }
  return true;
}

}  // namespace ferry::worker
