// Micro-benchmarks of the event core: one loop iteration, a notifier round trip, timer add and
// delete, connection get/free. Printed, never asserted (.ci/run runs them briefly).
#include <memory>
#include <vector>

#include <benchmark/benchmark.h>
#include <spdlog/spdlog.h>

#include "event/event_loop.h"
#include "event/notifier.h"
#include "event/syscall_util.h"

namespace ferry::event {
namespace {

// An iteration with a timer that is already due: epoll_wait(0), expire, re-arm.
void BM_LoopIteration(benchmark::State& state) {
  EventLoop loop;
  if (loop.init({.connections = 16, .epoll_events = 64})) state.SkipWithError("init");
  struct Ctx {
    EventLoop* loop;
    long fired = 0;
  } ctx{&loop};
  Event tick;
  tick.data = &ctx;
  tick.handler = [](Event& ev) { ++static_cast<Ctx*>(ev.data)->fired; };
  for (auto _ : state) {
    loop.add_timer(tick, Msec{0});
    loop.process_events_and_timers();
  }
  state.counters["fired"] = static_cast<double>(ctx.fired);
}
BENCHMARK(BM_LoopIteration);

// notify() on the loop thread, then the iteration that runs the handler.
void BM_NotifierRoundTrip(benchmark::State& state) {
  EventLoop loop;
  if (loop.init({.connections = 16, .epoll_events = 64})) state.SkipWithError("init");
  std::uint64_t drained = 0;
  Notifier n;
  if (n.create(
          loop,
          [](Notifier& self, std::uint64_t k) { *static_cast<std::uint64_t*>(self.data()) += k; },
          &drained, true)) {
    state.SkipWithError("notifier");
  }
  for (auto _ : state) {
    n.notify();
    loop.process_events_and_timers();
  }
  if (drained != static_cast<std::uint64_t>(state.iterations()))
    state.SkipWithError("lost wake-up");
}
BENCHMARK(BM_NotifierRoundTrip);

// Arming and disarming one timer with state.range(0) others in the tree.
void BM_TimerAddDelete(benchmark::State& state) {
  TimerTree tree;
  const auto others = static_cast<std::size_t>(state.range(0));
  auto background = std::make_unique<Event[]>(others);
  const TimePoint base = monotonic_now();
  for (std::size_t i = 0; i < others; ++i) {
    background[i].handler = [](Event&) {};
    tree.add(background[i], base + Msec(static_cast<long>(i % 10'000)));
  }
  Event ev;
  ev.handler = [](Event&) {};
  long k = 0;
  for (auto _ : state) {
    tree.add(ev, base + Msec(++k % 10'000));
    tree.del(ev);
  }
  for (std::size_t i = 0; i < others; ++i) tree.del(background[i]);
}
BENCHMARK(BM_TimerAddDelete)->Arg(0)->Arg(1000)->Arg(100'000);

// Taking a pooled connection and giving it back (no fd: the cost of the pool alone).
void BM_ConnectionPoolGetFree(benchmark::State& state) {
  ConnectionPool pool(1024);
  for (auto _ : state) {
    Connection* c = pool.get(UniqueFd{});
    benchmark::DoNotOptimize(c);
    pool.free(*c);
  }
}
BENCHMARK(BM_ConnectionPoolGetFree);

}  // namespace
}  // namespace ferry::event

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
