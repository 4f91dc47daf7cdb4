#!/usr/bin/env python3
"""Python and C++ processes on one bus, through the C API (shmbus_ctypes).

  Python  --jobs-->     C++ worker (group "cpp-workers")
  Python  <--results--  C++ worker (one reply per job, correlated by key; the job's message id)
  C++     --tasks-->    Python consumer (group "py-workers", nack + redelivery)

Python creates the channels and the groups first, so nothing depends on which
process gets where first; then it starts the C++ worker (job_worker.cpp),
publishes the jobs, reads every reply, works through the tasks, and stops the
worker. Every step is checked; the exit status is 0 only if all held.

Usage: job_roundtrip.py [--library PATH/libshmbus.so] [--worker PATH/shmbus_job_worker]
"""

import argparse
import os
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shmbus_ctypes as sb  # noqa: E402

BUS = "shmbustest"
JOBS = 20
TASKS = 12
FLAKY_JOB = 3  # the worker fails its first attempt
SECOND = 1_000_000_000
JOB_ID_BASE = 0x10B0000000000000  # job i has key i and message id JOB_ID_BASE + i
TASK_ID_BASE = 0x7A5C000000000000  # job_worker.cpp's kTaskIdBase


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--library", help="libshmbus.so (default: $SHMBUS_LIBRARY, then the system's)")
    ap.add_argument("--worker", default="shmbus_job_worker", help="the C++ worker executable")
    args = ap.parse_args()

    lib = sb.load(args.library)
    print(f"loaded {lib.path} (shmbus {lib.version()})")
    tag = f"py{os.getpid()}"
    names = {k: f"{tag}-{k}" for k in ("jobs", "results", "tasks")}
    worker = None
    try:
        jobs = sb.Channel.create(lib, names["jobs"], bus=BUS, capacity=64)
        results = sb.Channel.create(lib, names["results"], bus=BUS, capacity=64)
        tasks = sb.Channel.create(lib, names["tasks"], bus=BUS, capacity=64)

        # Readers exist before anything is published: no message can be missed.
        replies = results.subscribe(start="earliest")
        py_workers = tasks.join_group("py-workers", visibility_timeout_ns=10 * SECOND)
        jobs.join_group("cpp-workers").close()  # the group keeps its cursor from here

        # An error names the problem and its context.
        try:
            sb.Channel.create(lib, names["jobs"], bus=BUS, capacity=64)
            check(False, "creating an existing channel must fail")
        except sb.ShmbusError as e:
            check(e.code == sb.ALREADY_EXISTS and names["jobs"] in e.message, f"clear error: {e}")
            print(f"expected error: {e}")

        with jobs.publisher() as pub:
            check(pub.max_payload == jobs.max_payload > 0, "publisher and channel agree on the max payload")
            for i in range(JOBS):
                text = f"job {i}: resize image-{i}.png"
                kind = 2 if i == FLAKY_JOB else 1
                check(pub.publish(text.encode(), key=i, type=kind, id=JOB_ID_BASE + i) == sb.OK, f"publish job {i}")

            worker = subprocess.Popen([args.worker, BUS, names["jobs"], names["results"], names["tasks"],
                                       str(TASKS)])

            # Every job comes back once, in upper case, correlated by its key.
            got = {}
            while len(got) < JOBS:
                m = replies.poll_wait(30 * SECOND)
                check(m is not None, f"a reply within 30 s (have {len(got)} of {JOBS})")
                check(m.correlation_id not in got, f"one reply per job (job {m.correlation_id} twice)")
                got[m.correlation_id] = m
            for i in range(JOBS):
                m = got[i]
                check(m.payload == f"JOB {i}: RESIZE IMAGE-{i}.PNG".encode(), f"reply {i}: {m.payload!r}")
                want_attempt = 2 if i == FLAKY_JOB else 1
                check(m.type == want_attempt, f"job {i} succeeded on attempt {m.type}, expected {want_attempt}")
                check(m.id == JOB_ID_BASE + i, f"reply {i} carries its job's message id (got {m.id:#x})")
            print(f"python: {JOBS} replies from the C++ worker, job {FLAKY_JOB} on its second attempt")

            # The C++ worker's tasks, through a Python consumer group: the first
            # delivery of the first task is nacked and must come back as attempt 2.
            seen = {}
            nacked = False
            while len(seen) < TASKS:
                d = py_workers.receive_wait(30 * SECOND)
                check(d is not None, f"a task within 30 s (have {len(seen)} of {TASKS})")
                i = d.message.key - 1000
                check(d.message.id == TASK_ID_BASE + i, f"task {i} carries message id {d.message.id:#x}")
                check(d.message.payload == f"task {i} from C++".encode(), f"task payload {d.message.payload!r}")
                if i == 0 and not nacked:
                    check(d.attempt == 1, "first delivery is attempt 1")
                    check(py_workers.nack(d, 0) == sb.OK, "nack")
                    nacked = True
                    continue
                check(py_workers.ack(d) == sb.OK, f"ack task {i}")
                check(i not in seen, f"task {i} acked twice")
                seen[i] = d.attempt
            check(seen[0] == 2, f"the nacked task came back as attempt 2 (got {seen[0]})")
            check(all(seen[i] == 1 for i in range(1, TASKS)), "other tasks: one attempt each")
            gs = tasks.group_stats("py-workers")
            check(gs.acked == TASKS and gs.nacked == 1 and gs.unfinished == 0,
                  f"py-workers stats: acked {gs.acked}, nacked {gs.nacked}, unfinished {gs.unfinished}")
            print(f"python: {TASKS} tasks from C++ consumed in group py-workers (1 nack, redelivered)")

            check(pub.publish(b"stop", type=99) == sb.OK, "publish stop")
        rc = worker.wait(timeout=30)
        worker = None
        check(rc == 0, f"the C++ worker exited {rc}")

        js = jobs.group_stats("cpp-workers")
        check(js.acked == JOBS + 1 and js.nacked == 1 and js.unfinished == 0,
              f"cpp-workers stats: acked {js.acked}, nacked {js.nacked}, unfinished {js.unfinished}")
        c = replies.counters()
        check(c.delivered == JOBS and c.lag == 0 and c.lost == 0, f"reply subscriber: {c.delivered} read, lag {c.lag}")
        check(results.stats().depth == 0, "results fully read")
        replies.seek(0)  # replay: the first reply again
        first = replies.poll()
        check(first is not None and first.sequence == 0 and first.payload == got[first.correlation_id].payload,
              "seek(0) replays the first reply")
        check(jobs.options().capacity == 64 and not replies.resumed, "channel options, anonymous subscriber")
        for h in (replies, py_workers, jobs, results, tasks):
            h.close()
        print("ok: python <-> C++ round trip over shmbus")
        return 0
    finally:
        if worker is not None:
            worker.kill()
            worker.wait()
        for n in names.values():
            sb.Channel.remove(lib, n, bus=BUS, missing_ok=True)
            sb.Channel.remove(lib, n + "-dlq", bus=BUS, missing_ok=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
