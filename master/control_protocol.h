// The control socket's protocol, spoken by the master (control_requests.cc) and `ferry -s`
// (control.cc): one request line per connection, one answer, then the master closes.
//   "reload\n"   answered once the new workers serve ("ok\n") or the reload failed ("error\n"
//                and the error lines);
//   "upgrade\n"  starts the new binary (as USR2): "error\n..." at once if it cannot start, or
//                later if the new master exits or hands the service back; "busy\n..." at once
//                when another upgrade (or its end) or a reload's read is under way: nothing was
//                done, ask again later; "ok\n" when this master stops (its successor serves).
//                The asker may send "abort\n" on the same connection while it waits: the new
//                master is told to QUIT (it hands the service back), and the answer follows;
//   "ready\n"    "ok\n" when the master's workers serve and no reload is pending, else "wait\n";
//   "status\n"   "ok LENGTH\n" and the statistics table (so that the client can tell a whole
//                table from one cut short), or "error\n...".
#pragma once

#include <string>
#include <string_view>

namespace ferry::master::protocol {

constexpr std::string_view kReload = "reload\n";
constexpr std::string_view kUpgrade = "upgrade\n";
constexpr std::string_view kReady = "ready\n";
constexpr std::string_view kStatus = "status\n";
constexpr std::string_view kAbort = "abort\n";  // on an upgrade's connection only

constexpr std::string_view kOk = "ok\n";
constexpr std::string_view kWait = "wait\n";
constexpr std::string_view kError = "error\n";
constexpr std::string_view kBusy = "busy\n";
// The error line of a request the master does not know, as every ferry has answered it: from an
// older master to "upgrade", `ferry -s upgrade` learns it cannot upgrade (and exits 3).
constexpr std::string_view kUnknownRequest = "ferry: unknown control request\n";

// A failure's answer: "error\n", then `lines` (each ending in '\n').
inline std::string error_answer(std::string_view lines) {
  std::string answer(kError);
  answer += lines;
  return answer;
}

// "Not now": "busy\n", then `lines`.
inline std::string busy_answer(std::string_view lines) {
  std::string answer(kBusy);
  answer += lines;
  return answer;
}

}  // namespace ferry::master::protocol
