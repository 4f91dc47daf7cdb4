// Process liveness: pid + start time, so a dead or recycled pid is never
// taken for the owner.
#include <catch2/catch.hpp>

#include "shm/liveness.hpp"

#include "test_support.hpp"

using namespace shmbus::shm;
using namespace shmbus::test;

TEST_CASE("this process is alive and has a start time") {
  const ProcessId me = self_process();
  CHECK(me.pid == static_cast<std::uint32_t>(::getpid()));
  CHECK(me.start_time > 0);
  CHECK(process_liveness(me) == Liveness::alive);
}

TEST_CASE("a dead child is dead, and so is a live pid with another start time") {
  Event ready;
  Event release;
  const pid_t child = fork_child([&] {
    ready.signal();
    release.wait(10'000);
    return 0;
  });
  REQUIRE(ready.wait());
  const ProcessId id{static_cast<std::uint32_t>(child), process_start_time(static_cast<std::uint32_t>(child))};
  CHECK(id.start_time > 0);
  CHECK(process_liveness(id) == Liveness::alive);
  // Same pid, other start time: what a recycled pid looks like.
  CHECK(process_liveness({id.pid, id.start_time + 1}) == Liveness::dead);
  ::kill(child, SIGKILL);
  // A zombie (killed, not yet reaped) counts as dead already.
  bool dead_before_reap = false;
  for (int i = 0; i < 100000 && !dead_before_reap; ++i) {
    dead_before_reap = process_liveness(id) == Liveness::dead;
  }
  CHECK(dead_before_reap);
  CHECK(wait_child(child) == 128 + SIGKILL);
  CHECK(process_liveness(id) == Liveness::dead);
}

TEST_CASE("pid 0 is nobody") { CHECK(process_liveness({0, 0}) == Liveness::dead); }
