// RelayDirection: one direction of a relayed session. Bytes read from one connection wait in a
// pooled buffer (in bulk, a kernel pipe for splice) until the other takes them; the FIN follows.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "event/connection.h"
#include "event/connection_io.h"
#include "event/event_loop.h"
#include "event/io_batch.h"
#include "worker/proxy/buffer_pool.h"
#include "worker/proxy/pipe_pool.h"
#include "worker/proxy/session_record.h"

namespace ferry::worker {

// What every direction of a worker's sessions borrows from, kept once (by the sessions' shared
// state) and pointed to by each direction: an idle session's size is what ferry's memory per
// connection is made of.
struct RelayResources {
  event::EventLoop* loop = nullptr;
  BufferPool* buffers = nullptr;
  PipePool* pipes = nullptr;
};

class RelayDirection {
 public:
  // Where the FIN of `from` has got to. Per direction: a session whose client has finished
  // sending may go on receiving for as long as the server sends.
  // The values are SessionRecord's (closing is never exported: a TLS session does not move).
  enum class State : std::uint8_t {
    open = 0,      // `from` may send more
    draining = 1,  // `from` sent its FIN; bytes read before it may still wait for `to`
    closing = 3,   // a TLS `to` has every byte; its close_notify waits for room, then the FIN
    finished = 2,  // everything `from` sent, the FIN included, is `to`'s
  };
  // What a pump() ended with.
  enum class Pumped : std::uint8_t {
    waiting,  // for readiness or a batched call's completion
    // just now: the last byte is out; a plain `to`'s FIN is to be passed on (pass_fin), a TLS
    // one's close_notify and FIN are out already
    finished,
    failed,  // a recv, send or splice failed: failed_side() and error() say where and why
  };

  // The buffers and pipes are borrowed only while bytes are in flight; `splice`: the proxy
  // allows splice(2) (the first EINVAL for this pair turns it off).
  // `buffer_size` is at most conf's 64 MiB.
  RelayDirection(const RelayResources& resources, std::size_t buffer_size, bool splice) noexcept
      : res_(&resources),
        size_(static_cast<std::uint32_t>(buffer_size)),
        base_size_(size_),
        splice_ok_(splice) {}
  ~RelayDirection() { release(); }
  RelayDirection(const RelayDirection&) = delete;
  RelayDirection& operator=(const RelayDirection&) = delete;

  // The ends, set as they come (a session's server side exists only once connected). Their
  // `data` is not the direction's: batch completions post their events, whose handlers pump.
  void set_from(event::Connection* from) noexcept { from_ = from; }
  void set_to(event::Connection* to) noexcept { to_ = to; }

  // Moves what it can until the sockets or a batched call make it wait. Both ends must be set.
  // `fin_follows`: the caller ends `to` as soon as this direction finishes (a shutdown, or a
  // close with nothing unread on `to`), so the last bytes after the EOF go with MSG_MORE and
  // the FIN rides in their segment: one packet fewer for a server that answers and closes.
  Pumped pump(bool fin_follows = false) noexcept;
  // Sends the FIN on (shutdown SHUT_WR on a plain `to`). A caller about to close `to` skips it:
  // the close sends the FIN anyway. A TLS `to` needs none: pump() sent its close_notify and FIN.
  void pass_fin() noexcept;
  // Puts `bytes` (at most the buffer's size) in front of whatever waits for `to`, so that it is
  // what `to` reads first: the PROXY header sent to a server.
  void prepend(std::span<const std::byte> bytes);
  // Withdraws a batched call still queued (it would run on a closed, or reused, fd from a freed
  // buffer) and gives back the buffer and an empty pipe. For the session's close.
  void release() noexcept;

  // Moving the session to another worker. settle() ends what the loop's batch holds for this
  // direction (a queued call, which never ran, is withdrawn; a completed one's result is taken)
  // and reads a splice pipe's bytes into the buffer, so that every byte read and not yet
  // written is in the buffer; false when a completed call had failed (failed_side(), error()).
  // Both ends must be set. It may pass bytes on (total() grows), never reads or writes anew.
  [[nodiscard]] bool settle() noexcept;
  // What the record carries of a settled direction.
  void export_to(DirectionRecord& d) const;
  // A new direction takes over `d` (its held bytes before anything read from now on). The
  // buffer grows to hold them when this worker's buffer_size is smaller.
  void import_from(DirectionRecord& d);

  // The IoBatch completion of every direction: give it to IoBatch::init of the loop's batch.
  static void on_batch_done(void* cookie, int result) noexcept;

  [[nodiscard]] State state() const noexcept { return state_; }
  // Bytes passed on to `to` so far.
  [[nodiscard]] std::uint64_t total() const noexcept { return total_; }
  // Bytes read from `from` that `to` has not taken yet.
  [[nodiscard]] std::size_t held() const noexcept { return end_ - start_ + in_pipe_; }
  [[nodiscard]] bool splicing() const noexcept { return splicing_; }
  // Whether `to` is read through TLS: pump() passes its FIN on (a close_notify first).
  [[nodiscard]] bool to_tls() const noexcept { return to_ != nullptr && to_->ssl != nullptr; }
  // Nothing read from `from` waits for `to`, and no batched call is queued or unreported.
  [[nodiscard]] bool drained() const noexcept {
    return held() == 0 && in_flight_ == Op::none && done_ == Op::none;
  }
  // Of held(), the bytes in a splice pipe.
  [[nodiscard]] std::size_t in_pipe() const noexcept { return in_pipe_; }
  // After Pumped::failed: the connection whose call failed, and its errno.
  [[nodiscard]] event::Connection* failed_side() const noexcept {
    return failed_ == Side::from ? from_ : failed_ == Side::to ? to_ : nullptr;
  }
  [[nodiscard]] int error() const noexcept { return error_; }

 private:
  // What one step did: more to do, wait, or failed.
  enum class Step : std::uint8_t { more, wait, failed };
  // A recv into or a send from the buffer queued on the loop's IoBatch (never both: a
  // direction reads only when its buffer is empty): the buffer is the kernel's until the flush
  // reports `result_` (bytes or -errno) and sets `done_`.
  enum class Op : std::uint8_t { none, recv, send };

  Step fill_buffer() noexcept;
  Step took_recv(const event::IoResult& r) noexcept;
  Step took_send(const event::IoResult& r) noexcept;
  Step flush_buffer() noexcept;
  Step fill_pipe() noexcept;
  Step flush_pipe() noexcept;
  Pumped close_tls() noexcept;
  // Back to the pool at its size; the next buffer is of buffer_size again.
  void give_buffer() noexcept {
    res_->buffers->give(std::move(buf_), size_);
    size_ = base_size_;
  }
  Step fail(event::Connection* side, int err) noexcept;

  // Laid out widest first: two of these make most of an idle session.
  enum class Side : std::uint8_t { none, from, to };
  const RelayResources* res_;
  event::Connection* from_ = nullptr;
  event::Connection* to_ = nullptr;
  std::unique_ptr<std::byte[]> buf_;
  std::size_t start_ = 0;
  std::size_t end_ = 0;
  std::uint64_t total_ = 0;
  std::size_t in_pipe_ = 0;
  event::IoBatch::Handle queued_ = nullptr;
  KernelPipe pipe_;
  // The buffer's size: buffer_size, or more while a moved direction holds more (a pipeful, an
  // old configuration's bigger buffer) until those bytes are out.
  std::uint32_t size_;
  std::uint32_t base_size_;  // buffer_size
  int result_ = 0;
  int error_ = 0;
  State state_ = State::open;
  bool splice_ok_;
  bool fin_follows_ = false;  // pump()'s
  // Bulk mode: a read filled the whole buffer, so the next reads go socket → pipe → socket
  // without copying; a splice that drains the socket before filling a buffer ends it. Small
  // messages stay on recv/send, which costs less per message than the pipe's two hops.
  bool splicing_ = false;
  Op in_flight_ = Op::none;
  Op done_ = Op::none;
  Side failed_ = Side::none;
};

}  // namespace ferry::worker
