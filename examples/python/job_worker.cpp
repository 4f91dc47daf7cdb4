// The C++ side of examples/python/job_roundtrip.py: a worker in consumer
// group "cpp-workers" of the jobs channel. For each job it publishes a reply
// on the results channel (the payload in upper case, correlation_id = the
// job's key, id = the job's message id, type = the attempt that succeeded)
// and acks it. The reply's id is the job's, not a fresh one, so a reply
// published twice (its job redelivered after a crash) is recognisably one
// event to whoever deduplicates the results. A job of type
// kFlaky fails its first attempt (nack, redelivered at once). A job of type
// kStop ends the worker. Before taking jobs it publishes `tasks` messages on
// the tasks channel for the Python side's own group (task i: key 1000 + i,
// message id kTaskIdBase + i).
//
// Usage: shmbus_job_worker BUS JOBS RESULTS TASKS NTASKS
// Exit: 0 done; 1 setup failed; 2 usage; 3 no job for 30 s; 4 publish failed.
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <utility>

#include <shmbus/shmbus.hpp>

namespace {

constexpr std::uint32_t kFlaky = 2;
constexpr std::uint32_t kStop = 99;
constexpr std::uint64_t kIdleLimitNs = 30'000'000'000ULL;
constexpr std::uint64_t kTaskIdBase = 0x7a5c000000000000ULL;  // job_roundtrip.py checks it

template <class T>
T need(shmbus::Result<T> r, const char* what) {
  if (!r) {
    std::fprintf(stderr, "job_worker: %s: %s\n", what, r.error().message().c_str());
    std::exit(1);
  }
  return std::move(r).value();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s BUS JOBS RESULTS TASKS NTASKS\n", argv[0]);
    return 2;
  }
  const std::string bus = argv[1];
  auto jobs = need(shmbus::Channel::open(argv[2], bus), "open jobs");
  auto results = need(shmbus::Channel::open(argv[3], bus), "open results");
  auto tasks = need(shmbus::Channel::open(argv[4], bus), "open tasks");
  const long ntasks = std::strtol(argv[5], nullptr, 10);

  auto task_pub = need(tasks.publisher(), "tasks publisher");
  for (long i = 0; i < ntasks; ++i) {
    shmbus::MessageMeta meta;
    meta.key = 1000 + static_cast<std::uint64_t>(i);
    meta.id = kTaskIdBase + static_cast<std::uint64_t>(i);
    const std::string text = "task " + std::to_string(i) + " from C++";
    if (task_pub.publish(text, meta) != shmbus::PublishStatus::ok) return 4;
  }

  auto reply_pub = need(results.publisher(), "results publisher");
  auto worker = need(jobs.join_group("cpp-workers"), "join cpp-workers");
  std::string buf(jobs.max_payload(), '\0');
  std::uint64_t done = 0;
  for (;;) {
    shmbus::Delivery d;
    const shmbus::PollStatus st = worker.receive_wait(d, std::as_writable_bytes(std::span<char>(buf)), kIdleLimitNs);
    if (st == shmbus::PollStatus::timeout) return 3;
    if (st != shmbus::PollStatus::ok) continue;  // lapped or corrupted: counted, read on
    const shmbus::Message& m = d.message;
    if (m.type == kStop) {
      (void)worker.ack(d);
      break;
    }
    if (m.type == kFlaky && d.attempt == 1) {
      (void)worker.nack(d, 0);  // fails once; the group redelivers it with attempt 2
      continue;
    }
    std::string reply(reinterpret_cast<const char*>(m.payload.data()), m.payload.size());
    for (char& c : reply) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    shmbus::MessageMeta meta;
    meta.correlation_id = m.key;
    meta.id = m.id;
    meta.type = d.attempt;
    if (reply_pub.publish(reply, meta) != shmbus::PublishStatus::ok) return 4;
    if (worker.ack(d) == shmbus::AckStatus::ok) ++done;
  }
  std::printf("job_worker: %llu jobs done, %ld tasks sent\n", static_cast<unsigned long long>(done), ntasks);
  return 0;
}
