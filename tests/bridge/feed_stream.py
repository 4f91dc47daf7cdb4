"""Writes XADD commands for stream KEY in the Redis protocol to stdout until
SIGTERM (or MAX entries), at most about PER_MS entries a millisecond: entry i
has data "e-<i>", key i+1 and message id 1000000000+i. Pipe it into
`redis-cli --pipe`. On SIGTERM it stops at a command boundary, closes stdout
and writes how many entries it sent to COUNT_FILE.

Usage: python3 feed_stream.py KEY COUNT_FILE MAX PER_MS
"""
import signal
import sys
import time

key, count_file, limit, per_ms = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
stop = False


def on_term(signo, frame):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
out = sys.stdout
i = 0
while not stop and i < limit:
    chunk = []
    for _ in range(100):
        args = ["XADD", key, "*", "data", "e-%d" % i, "key", str(i + 1), "id", str(1000000000 + i)]
        chunk.append("*%d\r\n" % len(args) + "".join("$%d\r\n%s\r\n" % (len(a), a) for a in args))
        i += 1
    out.write("".join(chunk))
    out.flush()
    time.sleep(100 / per_ms / 1000.0)
while not stop:
    signal.pause()
out.close()
with open(count_file, "w") as f:
    f.write("%d\n" % i)
