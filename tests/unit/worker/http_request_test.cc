// Tests of worker/status/http_request: valid heads, each kind of malformed one, every prefix,
// the 8 KiB bound, byte-at-a-time feeding, and a fixed-seed mutation run.
#include "worker/status/http_request.h"

#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace ferry::worker::http {
namespace {

using namespace std::string_literals;
using namespace std::string_view_literals;

// Views in the result point into `s`: literals (static) or strings the test keeps.
ParseResult parse(std::string_view s) { return parse_request(s); }

TEST(HttpRequestTest, PlainGet) {
  const std::string req = "GET /status HTTP/1.1\r\nHost: localhost:9145\r\n\r\n";
  const ParseResult r = parse(req);
  ASSERT_EQ(r.status, ParseStatus::done) << r.reason;
  EXPECT_EQ(r.request.method, "GET");
  EXPECT_EQ(r.request.target, "/status");
  EXPECT_EQ(r.request.path, "/status");
  EXPECT_EQ(r.request.query, "");
  EXPECT_EQ(r.request.minor, 1);
  EXPECT_TRUE(r.request.keep_alive);
  EXPECT_EQ(r.request.headers, 1U);
  EXPECT_EQ(r.request.length, req.size());
}

TEST(HttpRequestTest, QueryIsKeptApart) {
  const ParseResult r = parse("GET /metrics?name=a%20b&x HTTP/1.1\r\nHost: h\r\n\r\n");
  ASSERT_EQ(r.status, ParseStatus::done) << r.reason;
  EXPECT_EQ(r.request.path, "/metrics");
  EXPECT_EQ(r.request.query, "name=a%20b&x");
  EXPECT_EQ(r.request.target, "/metrics?name=a%20b&x");
  const ParseResult empty = parse("GET /metrics? HTTP/1.1\r\nHost: h\r\n\r\n");
  ASSERT_EQ(empty.status, ParseStatus::done) << empty.reason;
  EXPECT_EQ(empty.request.path, "/metrics");
  EXPECT_EQ(empty.request.query, "");
}

TEST(HttpRequestTest, Http10DefaultsToCloseAndNeedsNoHost) {
  ParseResult r = parse("GET /status HTTP/1.0\r\n\r\n");
  ASSERT_EQ(r.status, ParseStatus::done) << r.reason;
  EXPECT_EQ(r.request.minor, 0);
  EXPECT_FALSE(r.request.keep_alive);
  EXPECT_EQ(r.request.headers, 0U);
  r = parse("GET /status HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
  ASSERT_EQ(r.status, ParseStatus::done) << r.reason;
  EXPECT_TRUE(r.request.keep_alive);
}

TEST(HttpRequestTest, ConnectionOptions) {
  struct Case {
    const char* headers;
    bool keep_alive;
  };
  for (const Case& c : {Case{"Connection: close\r\n", false}, Case{"connection: CLOSE\r\n", false},
                        Case{"Connection: keep-alive, close\r\n", false},
                        Case{"Connection: TE,,  close \r\n", false},
                        Case{"Connection: Upgrade\r\n", true}, Case{"Connection:\r\n", true},
                        Case{"Connection: keep-alive\r\nConnection: close\r\n", false},
                        Case{"Connection: closed\r\n", true}}) {
    const ParseResult r = parse(std::string("GET / HTTP/1.1\r\nHost: h\r\n") + c.headers + "\r\n");
    ASSERT_EQ(r.status, ParseStatus::done) << c.headers << r.reason;
    EXPECT_EQ(r.request.keep_alive, c.keep_alive) << c.headers;
  }
}

TEST(HttpRequestTest, OtherValidForms) {
  for (const char* req : {
           "HEAD /status HTTP/1.1\r\nHost: h\r\n\r\n",
           "POST /status HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
           "GET /status HTTP/1.1\r\nHost: h\r\nContent-Length: 000\r\n\r\n",
           "DELETE / HTTP/1.1\r\nHost:h\r\n\r\n",
           "get /status HTTP/1.1\r\nHost: h\r\n\r\n",  // another method, for the server to refuse
           "GET /a/b;c=d/%7e:@!$&'()*+,=-._~ HTTP/1.1\r\nHost: h\r\n\r\n",
           "GET / HTTP/1.1\r\nHost: h\r\nX-Tab:\tvalue\twith tab\t\r\nX-Empty:\r\n\r\n",
           "GET / HTTP/1.1\r\nHost: h\r\nX-Obs-Text: caf\xc3\xa9\r\n\r\n",
           "GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: Prometheus/2.45.0\r\nAccept: "
           "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/"
           "*;q=0.1\r\nAccept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n",
       }) {
    const ParseResult r = parse(req);
    EXPECT_EQ(r.status, ParseStatus::done) << req << ": " << r.reason;
  }
}

TEST(HttpRequestTest, BytesAfterTheHeadAreLeftForTheNextRequest) {
  const std::string first = "GET /status HTTP/1.1\r\nHost: h\r\n\r\n";
  const std::string both = first + "GET /metrics HTTP/1.1\r\nHo";
  const ParseResult r = parse(both);
  ASSERT_EQ(r.status, ParseStatus::done) << r.reason;
  EXPECT_EQ(r.request.length, first.size());
  EXPECT_EQ(r.request.path, "/status");
}

TEST(HttpRequestTest, MalformedHeadsAreErrors) {
  const std::vector<std::string> bad = {
      // request line
      "GET /status HTTP/1.1\n\n",
      "GET /status HTTP/1.1\r\nHost: h\n\r\n",
      "GET /status HTTP/1.1\r\nHost: h\r\n\n",
      "\r\nGET /status HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET /status HTTP/1.1\rHost: h\r\n\r\n",
      "GET  /status HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET /status  HTTP/1.1\r\nHost: h\r\n\r\n",
      " GET /status HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET /status HTTP/1.1 \r\nHost: h\r\n\r\n",
      "GET\t/status HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET /status\r\nHost: h\r\n\r\n",
      "GET\r\nHost: h\r\n\r\n",
      "G(T /status HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET status HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET http://h/status HTTP/1.1\r\nHost: h\r\n\r\n",
      "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET /sta tus HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET /status#frag HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET /st\"atus HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET /status?a=<b> HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET /%zz HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET /%4 HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET /% HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET /status HTTP/2.0\r\nHost: h\r\n\r\n",
      "GET /status HTTP/1.2\r\nHost: h\r\n\r\n",
      "GET /status http/1.1\r\nHost: h\r\n\r\n",
      "GET /status HTTP/1.10\r\nHost: h\r\n\r\n",
      "GET /status HTTP/1\r\nHost: h\r\n\r\n",
      "GET /status HTTP/1.1\r\n\r\n",  // no Host
      // header lines
      "GET /status HTTP/1.1\r\nHost: h\r\nX-A: b\r\n c\r\n\r\n",
      "GET /status HTTP/1.1\r\nHost: h\r\n\tX-A: b\r\n\r\n",
      "GET /status HTTP/1.1\r\nHost : h\r\n\r\n",
      "GET /status HTTP/1.1\r\nHost: h\r\nNo-Colon\r\n\r\n",
      "GET /status HTTP/1.1\r\nHost: h\r\n: empty-name\r\n\r\n",
      "GET /status HTTP/1.1\r\nHost: h\r\nX(A): b\r\n\r\n",
      "GET /status HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n",
      "GET /status HTTP/1.0\r\nHost: h\r\nHost: i\r\n\r\n",
      // NUL, CTL, DEL
      "GET /status HTTP/1.1\r\nHost: h\0\r\n\r\n"s,
      "GET /st\0tus HTTP/1.1\r\nHost: h\r\n\r\n"s,
      "GET /status HTTP/1.1\r\nHost: h\x01\r\n\r\n",
      "GET /status HTTP/1.1\r\nHost: h\x1b[0m\r\n\r\n",
      "GET /status HTTP/1.1\r\nHost: h\x7f\r\n\r\n",
      "GET /status HTTP/1.1\r\nX-\x0b: h\r\n\r\n",
      // bodies
      "POST /status HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
      "POST /status HTTP/1.1\r\nHost: h\r\nContent-Length: 01\r\n\r\n",
      "POST /status HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
      "POST /status HTTP/1.1\r\nHost: h\r\nContent-Length: 0, 0\r\n\r\n",
      "POST /status HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n",
      "POST /status HTTP/1.1\r\nHost: h\r\nContent-Length: 1e3\r\n\r\n",
      "POST /status HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "GET /status HTTP/1.1\r\nHost: h\r\ntransfer-encoding: identity\r\n\r\n",
  };
  for (const std::string& req : bad) {
    const ParseResult r = parse(req);
    EXPECT_EQ(r.status, ParseStatus::error) << req;
    EXPECT_FALSE(r.reason.empty()) << req;
  }
}

TEST(HttpRequestTest, ReasonsNameTheFault) {
  EXPECT_EQ(parse("GET / HTTP/1.1\nHost: h\n\n").reason, "bare LF");
  EXPECT_EQ(parse("GET / HTTP/1.1\r\nHost: h\r\n x\r\n\r\n").reason,
            "obs-fold (a line starting with space)");
  EXPECT_EQ(parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc").reason,
            "request bodies are not supported");
  EXPECT_EQ(parse("GET / HTTP/1.1\r\n\r\n").reason, "HTTP/1.1 request without Host");
}

TEST(HttpRequestTest, BadBytesAreRefusedBeforeTheirLineEnds) {
  EXPECT_EQ(parse("GET /\0"sv).status, ParseStatus::error);
  EXPECT_EQ(parse("GET /\x02").status, ParseStatus::error);
  EXPECT_EQ(parse("GET /\rX").status, ParseStatus::error);
  EXPECT_EQ(parse("GET /\n").status, ParseStatus::error);
  // A CR whose LF is not in yet waits.
  EXPECT_EQ(parse("GET / HTTP/1.1\r").status, ParseStatus::need_more);
}

const std::vector<std::string>& valid_requests() {
  static const std::vector<std::string> v = {
      "GET /status HTTP/1.1\r\nHost: localhost:9145\r\nUser-Agent: curl/8.5.0\r\nAccept: "
      "*/*\r\n\r\n",
      "HEAD /metrics?x=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
      "GET / HTTP/1.1\r\nHost:h\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
  };
  return v;
}

TEST(HttpRequestTest, EveryPrefixNeedsMore) {
  for (const std::string& req : valid_requests()) {
    for (std::size_t n = 0; n < req.size(); ++n) {
      const ParseResult r = parse(req.substr(0, n));
      EXPECT_EQ(r.status, ParseStatus::need_more) << n << " bytes of " << req << ": " << r.reason;
    }
    EXPECT_EQ(parse(req).status, ParseStatus::done) << req;
  }
}

TEST(HttpRequestTest, FedOneByteAtATimeFromAMovingBufferItGivesTheSameResult) {
  for (const std::string& req : valid_requests()) {
    RequestParser p;
    ParseResult r;
    for (std::size_t n = 1; n <= req.size(); ++n) {
      // A fresh copy each time: views must come from the last buffer, not an earlier one.
      const std::string copy = req.substr(0, n);
      r = p.parse(copy);
      if (n < req.size()) {
        ASSERT_EQ(r.status, ParseStatus::need_more) << n << ": " << r.reason;
        continue;
      }
      ASSERT_EQ(r.status, ParseStatus::done) << r.reason;
      const ParseResult once = parse(req);
      EXPECT_EQ(r.request.method, once.request.method);
      EXPECT_EQ(r.request.target, once.request.target);
      EXPECT_EQ(r.request.query, once.request.query);
      EXPECT_EQ(r.request.keep_alive, once.request.keep_alive);
      EXPECT_EQ(r.request.headers, once.request.headers);
      EXPECT_EQ(r.request.length, req.size());
      EXPECT_EQ(r.request.method.data(), copy.data());
    }
  }
}

TEST(HttpRequestTest, ResetParsesTheNextRequest) {
  RequestParser p;
  ASSERT_EQ(p.parse("GET /status HTTP/1.1\r\nHost: h\r\n\r\n").status, ParseStatus::done);
  p.reset();
  const ParseResult r = p.parse("GET /metrics HTTP/1.0\r\n\r\n");
  ASSERT_EQ(r.status, ParseStatus::done) << r.reason;
  EXPECT_EQ(r.request.path, "/metrics");
  EXPECT_FALSE(r.request.keep_alive);
}

TEST(HttpRequestTest, AnErrorStaysAnError) {
  RequestParser p;
  ASSERT_EQ(p.parse("GET /\x01").status, ParseStatus::error);
  EXPECT_EQ(p.parse("GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n").status, ParseStatus::error);
}

// A head of `size` bytes: request line, Host, one filler header, empty line.
std::string head_of(std::size_t size) {
  const std::string start = "GET /status HTTP/1.1\r\nHost: h\r\nX-Fill: ";
  const std::string end = "\r\n\r\n";
  return start + std::string(size - start.size() - end.size(), 'a') + end;
}

TEST(HttpRequestTest, HeadsUpTo8KiBParseAndLongerOnesAreTooLarge) {
  ASSERT_EQ(kMaxRequest, 8192U);
  const ParseResult fits = parse(head_of(kMaxRequest));
  ASSERT_EQ(fits.status, ParseStatus::done) << fits.reason;
  EXPECT_EQ(fits.request.length, kMaxRequest);
  // ... with a pipelined request behind it.
  EXPECT_EQ(parse(head_of(kMaxRequest) + "GET / HTTP/1.1\r\n").status, ParseStatus::done);

  const std::string over = head_of(kMaxRequest + 1);
  EXPECT_EQ(parse(over).status, ParseStatus::too_large);
  // Known as soon as the first 8 KiB are in without the end.
  EXPECT_EQ(parse(over.substr(0, kMaxRequest)).status, ParseStatus::too_large);
  EXPECT_EQ(parse(over.substr(0, kMaxRequest - 1)).status, ParseStatus::need_more);
  // A CR as the 8192nd byte: its LF would be the 8193rd.
  EXPECT_EQ(parse(over.substr(0, kMaxRequest - 1) + "\r").status, ParseStatus::too_large);
  // A long request line alone.
  EXPECT_EQ(parse("GET /" + std::string(10000, 'a')).status, ParseStatus::too_large);
  // An error within the bound is reported as the error it is.
  EXPECT_EQ(parse("GET /\x01" + std::string(10000, 'a')).status, ParseStatus::error);
  RequestParser p;
  ASSERT_EQ(p.parse(over).status, ParseStatus::too_large);
  EXPECT_EQ(p.parse(over).status, ParseStatus::too_large);
}

// A fixed-seed run of mutated requests (bytes replaced, inserted, removed, heads cut and
// spliced): the parser never crashes, feeding in pieces gives the result of one call, and
// whatever parses satisfies the grammar's invariants.
TEST(HttpRequestTest, MutatedRequestsNeverCrashAndPiecesAgreeWithOneCall) {
  std::mt19937 rng(20240909);
  const std::string alphabet = "\r\n \t:/?%HTTP1.0GETHEADhost\x00\x7f\x80\xff"s;
  std::size_t done = 0, errors = 0, more = 0, large = 0;
  for (int round = 0; round < 200'000; ++round) {
    std::string s = valid_requests()[rng() % valid_requests().size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const std::size_t at = s.empty() ? 0 : rng() % s.size();
      const char c = rng() % 2 ? alphabet[rng() % alphabet.size()] : static_cast<char>(rng());
      switch (rng() % 5) {
        case 0:
          if (!s.empty()) s[at] = c;
          break;
        case 1: s.insert(s.begin() + static_cast<long>(at), c); break;
        case 2:
          if (!s.empty()) s.erase(at, 1);
          break;
        case 3: s.resize(at); break;
        default:
          if (rng() % 64 == 0) s.insert(at, std::string(9000, c));
          break;
      }
    }
    const ParseResult once = parse(s);
    RequestParser p;
    ParseResult pieces;
    for (std::size_t n = 0; n < s.size();) {
      n = std::min(s.size(), n + 1 + rng() % 16);
      pieces = p.parse(std::string_view(s).substr(0, n));
      if (pieces.status != ParseStatus::need_more) break;
    }
    if (s.empty()) pieces = p.parse(s);
    ASSERT_EQ(pieces.status, once.status) << testing::PrintToString(s);
    switch (once.status) {
      case ParseStatus::done:
        ++done;
        ASSERT_LE(once.request.length, kMaxRequest);
        ASSERT_LE(once.request.length, s.size());
        ASSERT_EQ(once.request.path.front(), '/');
        ASSERT_TRUE(once.request.minor == 0 || once.request.minor == 1);
        ASSERT_EQ(pieces.request.length, once.request.length);
        break;
      case ParseStatus::error: ++errors; break;
      case ParseStatus::need_more: ++more; break;
      case ParseStatus::too_large: ++large; break;
    }
  }
  // The run reaches every outcome.
  EXPECT_GT(done, 1000U);
  EXPECT_GT(errors, 1000U);
  EXPECT_GT(more, 1000U);
  EXPECT_GT(large, 10U);
}

}  // namespace
}  // namespace ferry::worker::http
