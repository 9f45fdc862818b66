// RelayDirection: the pump of one direction (recv/send through a pooled buffer, splice through
// a pooled pipe in bulk, batched io_uring calls), FIN passing and its completions.
#include "worker/proxy/relay_direction.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include <spdlog/spdlog.h>

#include "event/connection_io.h"
#include "event/syscall_util.h"
#include "worker/tls/tls_io.h"

namespace ferry::worker {

using event::IoStatus;

namespace {
constexpr unsigned kSpliceFlags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;
// A pipe holds 64 KiB by default (16 pages): one splice moves up to that much, whatever the
// buffer's size (as HAProxy, whose pipes are the system's size). A direction stalled by a slow
// receiver may so hold up to 64 KiB of data in its pipe (kernel memory) instead of 16 KiB.
constexpr std::size_t kSpliceChunk = 64 * 1024;
}  // namespace

RelayDirection::Pumped RelayDirection::pump(bool fin_follows) noexcept {
  fin_follows_ = fin_follows;
  for (;;) {
    if (in_flight_ != Op::none) return Pumped::waiting;
    Step step;
    if (in_pipe_ > 0 || end_ > start_) {
      // A finished batched call is taken whatever the flags say: its bytes are already moved.
      if (!to_->write.ready && done_ != Op::send) return Pumped::waiting;
      step = in_pipe_ > 0 ? flush_pipe() : flush_buffer();
    } else if (state_ == State::draining || state_ == State::closing) {
      if (to_->ssl != nullptr) return close_tls();
      state_ = State::finished;
      return Pumped::finished;
    } else if (state_ == State::finished || (!from_->read.ready && done_ != Op::recv)) {
      return Pumped::waiting;
    } else {
      step = splicing_ && done_ == Op::none ? fill_pipe() : fill_buffer();
    }
    if (step == Step::wait) return Pumped::waiting;
    if (step == Step::failed) return Pumped::failed;
  }
}

// A TLS `to`'s FIN: its close_notify may find the socket full (the last record just filled
// it); the FIN waits for it, or the peer would see the stream cut short.
RelayDirection::Pumped RelayDirection::close_tls() noexcept {
  if (state_ == State::closing && !to_->write.ready) return Pumped::waiting;
  if (tls::shutdown_write(*to_) == tls::ShutdownStatus::again) {
    state_ = State::closing;
    return Pumped::waiting;
  }
  state_ = State::finished;
  return Pumped::finished;
}

void RelayDirection::pass_fin() noexcept {
  if (to_->ssl != nullptr) return;  // close_tls() passed it on
  if (::shutdown(to_->fd.get(), SHUT_WR) == -1) {
    spdlog::debug("shutdown(SHUT_WR) failed: {}", event::last_error().message());
  }
}

void RelayDirection::prepend(std::span<const std::byte> bytes) {
  if (!buf_) buf_ = res_->buffers->take(size_);
  const std::size_t held = end_ - start_;
  std::memmove(buf_.get() + bytes.size(), buf_.get() + start_, held);
  std::memcpy(buf_.get(), bytes.data(), bytes.size());
  start_ = 0;
  end_ = bytes.size() + held;
}

void RelayDirection::release() noexcept {
  if (in_flight_ != Op::none) event::IoBatch::cancel(queued_);
  in_flight_ = Op::none;
  give_buffer();
  start_ = end_ = 0;
  // A pipe with bytes still in it is not reused: its fds close with it.
  if (in_pipe_ == 0) res_->pipes->give(std::move(pipe_));
  pipe_ = {};
  in_pipe_ = 0;
}

void RelayDirection::on_batch_done(void* cookie, int result) noexcept {
  auto& d = *static_cast<RelayDirection*>(cookie);
  d.done_ = d.in_flight_;
  d.in_flight_ = Op::none;
  d.result_ = result;
  // Either end's handler pumps the direction on.
  d.res_->loop->post(d.done_ == Op::recv ? d.from_->read : d.to_->write);
}

RelayDirection::Step RelayDirection::fail(event::Connection* side, int err) noexcept {
  failed_ = side == from_ ? Side::from : Side::to;
  error_ = err;
  return Step::failed;
}

RelayDirection::Step RelayDirection::fill_buffer() noexcept {
  if (!buf_) buf_ = res_->buffers->take(size_);
  const std::span<std::byte> space{buf_.get(), size_};
  // Through TLS: OpenSSL reads the socket itself (no batched call, no splice).
  if (from_->ssl != nullptr) return took_recv(tls::recv(*from_, space));
  event::IoResult r;
  if (done_ == Op::recv) {
    done_ = Op::none;
    r = event::recv_done(*from_, result_, size_);
    if (r.status == IoStatus::error && r.err == ECANCELED) r = event::recv(*from_, space);
  } else if (event::IoBatch* b = res_->loop->batch();
             b != nullptr && (queued_ = b->queue_recv(from_->fd.get(), space, this))) {
    in_flight_ = Op::recv;
    return Step::wait;
  } else {
    r = event::recv(*from_, space);
  }
  return took_recv(r);
}

RelayDirection::Step RelayDirection::took_recv(const event::IoResult& r) noexcept {
  if (r.status == IoStatus::error) return fail(from_, r.err);
  start_ = 0;
  end_ = r.bytes;
  if (r.bytes == 0) give_buffer();
  if (r.status == IoStatus::eof || from_->read.eof) state_ = State::draining;
  if (r.status == IoStatus::again) return Step::wait;
  if (splice_ok_ && r.bytes == size_ && from_->ssl == nullptr && to_->ssl == nullptr) {
    splicing_ = true;
  }
  return Step::more;
}

RelayDirection::Step RelayDirection::flush_buffer() noexcept {
  const std::span<const std::byte> data{buf_.get() + start_, end_ - start_};
  if (to_->ssl != nullptr) return took_send(tls::send(*to_, data));
  const bool more = fin_follows_ && state_ == State::draining;
  event::IoResult r;
  if (done_ == Op::send) {
    done_ = Op::none;
    r = event::send_done(*to_, result_, data.size());
    if (r.status == IoStatus::error && r.err == ECANCELED) r = event::send(*to_, data, more);
  } else if (event::IoBatch* b = res_->loop->batch();
             b != nullptr && (queued_ = b->queue_send(to_->fd.get(), data, this, more))) {
    in_flight_ = Op::send;
    return Step::wait;
  } else {
    r = event::send(*to_, data, more);
  }
  return took_send(r);
}

RelayDirection::Step RelayDirection::took_send(const event::IoResult& r) noexcept {
  if (r.status == IoStatus::error) return fail(to_, r.err);
  if (r.status == IoStatus::again) return Step::wait;
  start_ += r.bytes;
  total_ += r.bytes;
  if (start_ == end_) {
    start_ = end_ = 0;
    give_buffer();
  }
  return Step::more;
}

bool RelayDirection::settle() noexcept {
  if (in_flight_ != Op::none) event::IoBatch::cancel(queued_);
  in_flight_ = Op::none;
  const Op done = std::exchange(done_, Op::none);
  if (done == Op::recv) {
    const event::IoResult r = event::recv_done(*from_, result_, size_);
    // -ECANCELED: the batch could not submit it, nothing was read.
    if (!(r.status == IoStatus::error && r.err == ECANCELED) && took_recv(r) == Step::failed) {
      return false;
    }
  } else if (done == Op::send) {
    const event::IoResult r = event::send_done(*to_, result_, end_ - start_);
    if (!(r.status == IoStatus::error && r.err == ECANCELED) && took_send(r) == Step::failed) {
      return false;
    }
  }
  splicing_ = false;
  // Its last bytes went with MSG_MORE for the FIN that the next pump() passes; frozen, that FIN
  // comes only from the new worker, a round trip later: they leave now (clearing TCP_CORK
  // pushes what is pending).
  if (fin_follows_ && state_ == State::draining && end_ == start_ && in_pipe_ == 0 &&
      to_->ssl == nullptr) {
    const int off = 0;
    if (::setsockopt(to_->fd.get(), IPPROTO_TCP, TCP_CORK, &off, sizeof off) == -1) {
      spdlog::debug("setsockopt(TCP_CORK) failed: {}", event::last_error().message());
    }
  }
  if (in_pipe_ > 0) {
    // Only an empty buffer lets a direction splice. A splice moves up to a pipe's 64 KiB, more
    // than a smaller buffer holds: the buffer grows to take the pipe's bytes (as import_from's),
    // to 64 KiB, so that moved directions share one buffer size in the pool.
    if (in_pipe_ > size_) {
      give_buffer();
      size_ = static_cast<std::uint32_t>(kSpliceChunk);
    }
    if (!buf_) buf_ = res_->buffers->take(size_);
    start_ = end_ = 0;
    while (end_ < in_pipe_) {
      const ssize_t n = event::retry_eintr(
          [&] { return ::read(pipe_.read.get(), buf_.get() + end_, in_pipe_ - end_); });
      if (n <= 0) {
        // A pipe that does not give back what it holds: the bytes are lost, the session too.
        spdlog::error("reading a splice pipe to move its session failed: {}",
                      n == 0 ? "end of file" : event::last_error().message());
        fail(from_, n == 0 ? EIO : errno);
        return false;
      }
      end_ += static_cast<std::size_t>(n);
    }
    in_pipe_ = 0;
    res_->pipes->give(std::move(pipe_));
    pipe_ = {};
  }
  if (end_ == start_ && buf_) {
    start_ = end_ = 0;
    give_buffer();
  }
  return true;
}

void RelayDirection::export_to(DirectionRecord& d) const {
  d.state = static_cast<std::uint8_t>(state_);
  d.splice_ok = splice_ok_;
  d.total = total_;
  if (end_ > start_) d.held.assign(buf_.get() + start_, buf_.get() + end_);
}

void RelayDirection::import_from(DirectionRecord& d) {
  state_ = static_cast<State>(d.state);
  splice_ok_ = splice_ok_ && d.splice_ok;
  total_ = d.total;
  if (d.held.empty()) return;
  // More held than this buffer holds (a pipeful, or an old configuration's bigger buffer): a
  // pipe's 64 KiB where that is enough, so that the pool does not keep one-off sizes.
  if (d.held.size() > size_) {
    size_ = static_cast<std::uint32_t>(std::max(d.held.size(), kSpliceChunk));
  }
  buf_ = res_->buffers->take(size_);
  std::memcpy(buf_.get(), d.held.data(), d.held.size());
  start_ = 0;
  end_ = d.held.size();
}

// socket → pipe. Where splice cannot serve (EINVAL: not a pair the kernel splices), the
// direction stays on buffers.
RelayDirection::Step RelayDirection::fill_pipe() noexcept {
  if (!pipe_) {
    pipe_ = res_->pipes->take();
    if (!pipe_) {
      splicing_ = false;
      return Step::more;
    }
  }
  const std::size_t chunk = std::max<std::size_t>(size_, kSpliceChunk);
  const ssize_t n = event::retry_eintr([&] {
    return ::splice(from_->fd.get(), nullptr, pipe_.write.get(), nullptr, chunk, kSpliceFlags);
  });
  if (n > 0) {
    in_pipe_ = static_cast<std::size_t>(n);
    // Drained: the burst is over. Measured against the configured buffer, not the chunk: a
    // pipe holds 16 fragments whatever their size, so from a network of 1500-byte packets a
    // splice returns about 23 KiB even from a socket holding plenty; and never against more
    // than a pipeful, which is all a splice can return.
    if (in_pipe_ < std::min<std::size_t>(base_size_, kSpliceChunk)) splicing_ = false;
    return Step::more;
  }
  const int err = errno;
  // The pipe is empty here, so EAGAIN means the socket is.
  res_->pipes->give(std::move(pipe_));
  splicing_ = false;
  if (n == 0) {
    from_->read.ready = false;
    from_->read.eof = true;
    if (state_ == State::open) state_ = State::draining;
    return Step::more;
  }
  if (err == EAGAIN || err == EWOULDBLOCK) {
    from_->read.ready = false;
    return Step::wait;
  }
  if (err == EINVAL) {
    splice_ok_ = false;
    return Step::more;
  }
  return fail(from_, err);
}

// pipe → socket.
RelayDirection::Step RelayDirection::flush_pipe() noexcept {
  const ssize_t n = event::retry_eintr([&] {
    return ::splice(pipe_.read.get(), nullptr, to_->fd.get(), nullptr, in_pipe_, kSpliceFlags);
  });
  if (n > 0) {
    in_pipe_ -= static_cast<std::size_t>(n);
    total_ += static_cast<std::uint64_t>(n);
    if (in_pipe_ == 0) {
      res_->pipes->give(std::move(pipe_));
    } else {
      to_->write.ready = false;  // a short write: the socket buffer is full
    }
    return Step::more;
  }
  if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    to_->write.ready = false;
    return Step::wait;
  }
  return fail(to_, n == -1 ? errno : EPIPE);
}

}  // namespace ferry::worker
