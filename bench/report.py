#!/usr/bin/env python3
"""Builds the benchmark report from the JSON the benchmark programs wrote.

Reads, from --in DIR (any that exist):
  pingpong.json        shmbus_pingpong, back-to-back round trips, several sizes
  pingpong_sleep.json  shmbus_pingpong --gap-us N: blocking waiters fall asleep
  throughput.json      shmbus_throughput
  micro.json           shmbus_micro_bench --benchmark_out (Google Benchmark)
  insn.json            scripts/insn.sh --json: instructions per publish and poll
  archive.json         shmbus_archive_bench: the disk archive against dd's loop
Writes to --out DIR:
  results.md    tables: every latency figure with its ratio to the floor (and
                to the minimal SPSC ring where it ran), shmbus against each
                baseline at p50 and p99, the targets, throughput (a reader
                that pauses kept apart: not a user figure), fan-out, groups,
                micro-benchmarks, instructions per operation
  results.json  everything above in one machine-readable file (inputs + targets)
  latency_percentiles.png, latency_by_size.png, fanout.png, throughput.png

Exit status: 0, 1 on bad input, 77 when --require-plots is given and
matplotlib is not installed (the test harness reports that as skipped).
"""
import argparse
import json
import math
import os
import sys

PCTS = ["p50", "p90", "p99", "p99.9", "p99.99", "max"]
KERNEL_BASELINES = ["pipe", "unix", "posix_mq", "boost_mq", "zmq"]
LABELS = {
    "floor": "floor (1 cache line)",
    "floor_copy": "floor + payload copy",
    "spsc_ring": "minimal SPSC ring",
    "shmbus_spin": "shmbus, busy-spin",
    "shmbus_block": "shmbus, blocking",
    "shmbus_archived": "shmbus, busy-spin, archiver attached",
    "eventfd": "eventfd (wake-up only)",
    "pipe": "pipe",
    "unix": "Unix socket",
    "posix_mq": "POSIX mq",
    "boost_mq": "Boost.Interprocess mq",
    "zmq": "ZeroMQ ipc://",
    "mc_queue": "moodycamel CQ (threads)",
    "mc_blocking": "moodycamel BCQ (threads)",
}


ORDER = list(LABELS.keys())


def color(name):
    import matplotlib
    cmap = matplotlib.colormaps["tab20"] if hasattr(matplotlib, "colormaps") else matplotlib.cm.get_cmap("tab20")
    i = ORDER.index(name) if name in ORDER else len(ORDER)
    return cmap((2 * i) % 20 / 20 + (0.05 if i >= 10 else 0.0))


def load(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def fmt_ns(v):
    if v is None:
        return "n/a"
    if v >= 1e6:
        return f"{v / 1e6:.2f} ms"
    if v >= 1e4:
        return f"{v / 1e3:.1f} µs"
    if v >= 1e3:
        return f"{v / 1e3:.2f} µs"
    return f"{v:.0f} ns"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r):
    if r is None:
        return "n/a"
    if r >= 100:
        return f"{r:.0f}×"
    if r >= 10:
        return f"{r:.1f}×"
    return f"{r:.2f}×"


def paired(t, fl, key="p50"):
    """Median over blocks of t's block percentile / the floor's (or another
    baseline's, fl) in the block with the same index."""
    a, b = t.get(f"block_{key}"), fl.get(f"block_{key}")
    if not a or not b:
        return None
    r = sorted(x / y for x, y in zip(a, b) if y > 0)
    if not r:
        return None
    n = len(r)
    return r[n // 2] if n % 2 else (r[n // 2 - 1] + r[n // 2]) / 2


def pick_run(pp, size):
    for run in pp["runs"]:
        if run["size"] == size:
            return run
    return None


def main_size(pp):
    sizes = [r["size"] for r in pp["runs"]]
    return 64 if 64 in sizes else sizes[0]


def pauses(p):
    """Whether a throughput point's reader pauses when it finds nothing: the
    publisher then runs ahead and the slot lines move in bulk, a figure about
    the cache lines that no user gets (older results: '+idle' in the mode)."""
    return p.get("reader_pauses", "+idle" in p.get("mode", ""))


def spsc_rows(pts):
    """The SPSC ring baseline points by reader mode: 'one_at_a_time' and
    'batch' (older results have 'batch' only)."""
    return {p["mode"]: p for p in pts if p["transport"] == "spsc_ring"}


# --- latency -----------------------------------------------------------------------

def latency_table(run, md):
    ts = run["transports"]
    fl = ts["floor"]
    fc = ts.get("floor_copy")
    ring = ts.get("spsc_ring")
    md.append(f"| {run['size']} B | " + " | ".join(PCTS) + " | p50, p99 ÷ floor, paired |" +
              (" p50, p99 ÷ SPSC ring, paired |" if ring else "") + " p50 ÷ floor+copy | sleeps/rt (A/B) |")
    md.append("|" + "---|" * (len(PCTS) + 4 + (1 if ring else 0)))
    for name, t in ts.items():
        cells = [f"{fmt_ns(t[p])} ({fmt_ratio(ratio(t[p], fl[p]))})" for p in PCTS]
        sw = t.get("voluntary_switches_per_rt", [0, 0])
        pr = f"{fmt_ratio(paired(t, fl, 'p50'))}, {fmt_ratio(paired(t, fl, 'p99'))}"
        if ring:
            pr += f" | {fmt_ratio(paired(t, ring, 'p50'))}, {fmt_ratio(paired(t, ring, 'p99'))}"
        md.append(f"| {LABELS.get(name, name)} | " + " | ".join(cells) + f" | {pr}" +
                  f" | {fmt_ratio(ratio(t['p50'], fc['p50'])) if fc else 'n/a'} | {sw[0]:.2f} / {sw[1]:.2f} |")
    for name, why in run.get("unavailable", {}).items():
        md.append(f"| {LABELS.get(name, name)} | not run: {why} |" + " |" * (len(PCTS) + 2 + (1 if ring else 0)))


def versus_table(run, md):
    ts = run["transports"]
    subjects = [s for s in ("shmbus_spin", "shmbus_block") if s in ts]
    head = "| baseline | p50 | p99 | " + " | ".join(
        f"{LABELS[s]} ÷ baseline, p50 | p99" for s in subjects) + " |"
    md.append(head)
    md.append("|" + "---|" * (3 + 2 * len(subjects)))
    for name, t in ts.items():
        if name in subjects:
            continue
        cells = []
        for s in subjects:
            cells.append(fmt_ratio(ratio(ts[s]["p50"], t["p50"])))
            cells.append(fmt_ratio(ratio(ts[s]["p99"], t["p99"])))
        md.append(f"| {LABELS.get(name, name)} | {fmt_ns(t['p50'])} | {fmt_ns(t['p99'])} | " + " | ".join(cells) + " |")


# --- targets -------------------------------------------------------------------------

def targets(pp, sleep, tp, micro, insn=None, arch=None):
    out = []

    def add(name, value, limit, ok, detail, unit="×"):
        out.append({"target": name, "measured": value, "limit": limit, "met": ok, "detail": detail, "unit": unit})

    if pp:
        run = pick_run(pp, main_size(pp))
        ts = run["transports"]
        fl, sp = ts["floor"], ts.get("shmbus_spin")
        # The latency targets (p50 and p99 at 8 B and 64 B, p99.99 at the
        # main size), each judged on the ratio paired by block where there is one.
        limits = {8: (("p50", 1.2), ("p99", 1.4)), 64: (("p50", 1.2), ("p99", 2.0), ("p99.99", 2.0))}
        for size, lims in limits.items():
            srun = pick_run(pp, size)
            if srun is None or "shmbus_spin" not in srun["transports"]:
                continue
            sfl, ssp = srun["transports"]["floor"], srun["transports"]["shmbus_spin"]
            for p, lim in lims:
                pooled = ratio(ssp[p], sfl[p])
                pr = paired(ssp, sfl, p) if p in ("p50", "p99") else None
                r = pr if pr is not None else pooled
                detail = f"shmbus {fmt_ns(ssp[p])}, floor {fmt_ns(sfl[p])}: {fmt_ratio(pooled)} over the whole run"
                if pr is not None:
                    detail += f"; {fmt_ratio(pr)} paired by block (the figure judged)"
                add(f"busy-spin ping-pong {p} ≤ {lim}× floor ({size} B)", r, lim, r is not None and r <= lim, detail)
        if sp:
            for b in KERNEL_BASELINES:
                if b in ts:
                    r = ratio(ts[b]["p50"], sp["p50"])
                    add(f"busy-spin p50 ≥ 30× lower than {LABELS[b]}", r, 30, r is not None and r >= 30,
                        f"{LABELS[b]} {fmt_ns(ts[b]['p50'])}, shmbus {fmt_ns(sp['p50'])}")
        arc = ts.get("shmbus_archived")
        if sp and arc:
            pr = paired(arc, sp, "p50")
            r = pr if pr is not None else ratio(arc["p50"], sp["p50"])
            add(f"busy-spin ping-pong p50 with an archiver attached ≤ 1.1× without ({run['size']} B)", r, 1.1,
                r is not None and r <= 1.1,
                f"archived {fmt_ns(arc['p50'])}, plain {fmt_ns(sp['p50'])}" +
                ("; paired by block (the figure judged)" if pr is not None else ""))
        if "shmbus_block" in ts and "eventfd" in ts:
            r = ratio(ts["shmbus_block"]["p50"], ts["eventfd"]["p50"])
            add("blocking subscriber p50 ≤ eventfd p50 (back-to-back)", r, 1.0, r is not None and r <= 1.0,
                f"shmbus {fmt_ns(ts['shmbus_block']['p50'])}, eventfd {fmt_ns(ts['eventfd']['p50'])}")
    if arch:
        by = {(p["point"], p["size"], p["fsync"]): p for p in arch["points"]}
        # The target: the archive (fsync never) against the disk's own
        # sequential write bandwidth, as `dd conv=fdatasync` measures it: the
        # `end` points, whose timed span ends when the bytes are on the disk.
        # The `never` points compare two writes into the page cache (no disk
        # involved): shown, as what the CPU allows, but not the target.
        baseline = {"end": "the disk: dd's loop with one sync at the end, timed (dd conv=fdatasync)",
                    "never": "dd's loop into the page cache, no sync: not the disk's bandwidth"}
        for p in arch["points"]:
            if p["fsync"] not in baseline or p["point"] not in ("archive", "archiver"):
                continue
            judged = p["fsync"] == "end"
            disk = by.get(("disk", p["size"], p["fsync"]))
            sub = by.get(("subscriber", p["size"], p["fsync"]))
            if p["point"] == "archive":
                r = p["ratio_to_disk"]
                name = (f"archive writer (fsync never) ≥ 0.8× the disk's sequential write bandwidth ({p['size']} B)"
                        if judged else f"archive writer ÷ dd, both into the page cache ({p['size']} B; no disk)")
                add(name, r, 0.8,
                    (r >= 0.8) if judged else None,
                    f"{p['mb_per_s']:.0f} MB/s, {p['msgs_per_s'] / 1e6:.2f} M msg/s; baseline "
                    f"{disk['mb_per_s'] if disk else 0:.0f} MB/s, {baseline[p['fsync']]}, same round")
                continue
            # The archiver reads the ring as a subscriber does: its bound is
            # the lesser of the disk and what the bus gives one plain reader.
            bounds = [b["mb_per_s"] for b in (disk, sub) if b and b["mb_per_s"] > 0]
            if not bounds:
                continue
            r = p["mb_per_s"] / min(bounds)
            name = (f"archiver, ring to disk (fsync never) ≥ 0.8× the lesser of the disk's sequential write "
                    f"bandwidth and a plain subscriber ({p['size']} B)" if judged else
                    f"archiver ÷ the lesser of the page cache and a plain subscriber ({p['size']} B; no disk)")
            add(name, r, 0.8, (r >= 0.8) if judged else None,
                f"{p['mb_per_s']:.0f} MB/s, {p['msgs_per_s'] / 1e6:.2f} M msg/s; baseline "
                f"{disk['mb_per_s'] if disk else 0:.0f} MB/s ({baseline[p['fsync']]}), plain subscriber "
                f"{sub['mb_per_s'] if sub else 0:.0f} MB/s (same publisher, same round)")
    if sleep:
        ts = sleep["runs"][0]["transports"]
        if "shmbus_block" in ts and "eventfd" in ts:
            r = ratio(ts["shmbus_block"]["p50"], ts["eventfd"]["p50"])
            add(f"blocking subscriber p50 ≤ eventfd p50 (asleep: {sleep['config']['gap_us']} µs gap)", r, 1.0,
                r is not None and r <= 1.0,
                f"shmbus {fmt_ns(ts['shmbus_block']['p50'])}, eventfd {fmt_ns(ts['eventfd']['p50'])}; "
                f"sleeps/rt shmbus {ts['shmbus_block']['voluntary_switches_per_rt']}, "
                f"eventfd {ts['eventfd']['voluntary_switches_per_rt']}")
    if tp:
        fan = [p for p in tp["points"] if p["scenario"] == "fanout" and p["policy"] == "drop_oldest"]
        by_n = {p["subscribers"]: p for p in fan}
        if 1 in by_n and max(by_n) > 1:
            n = max(by_n)
            r = ratio(by_n[n]["ns_per_publish"], by_n[1]["ns_per_publish"])
            add(f"publish cost with {n} subscribers ≤ 1.2× with 1 (processes, drop_oldest)", r, 1.2,
                r is not None and r <= 1.2,
                f"{by_n[n]['ns_per_publish']:.1f} ns vs {by_n[1]['ns_per_publish']:.1f} ns per publish"
                + (" (oversubscribed)" if by_n[n].get("oversubscribed") else ""))
        # A reader that pauses is not a figure a user gets: never a target's.
        pubsub1 = [p for p in tp["points"] if p["scenario"] == "pubsub" and p["transport"] == "shmbus"
                   and p["publishers"] == 1 and p["size"] == 64 and not pauses(p)]
        one = sorted((p for p in pubsub1 if "read_batch" in p["mode"]), key=lambda p: p["msgs_per_s"], reverse=True)
        rings = spsc_rows(tp["points"])
        if one:
            v = one[0]["msgs_per_s"] / 1e6
            spsc = rings.get("batch")
            add("1 publisher → 1 subscriber, 64 B, batching: ≥ 20 M msg/s", v, 20, v >= 20,
                f"{v:.2f} M msg/s with {one[0]['mode']} (median of {len(one[0]['msgs_per_s_runs'])})"
                + (f"; the minimal SPSC ring: {spsc['msgs_per_s'] / 1e6:.2f} M msg/s" if spsc else ""),
                unit="M msg/s")
            if spsc:
                r = ratio(one[0]["msgs_per_s"], spsc["msgs_per_s"])
                add("1 → 1, 64 B, batched ≥ 0.75× the SPSC ring (batch), no reader pause", r, 0.75,
                    r is not None and r >= 0.75,
                    f"{v:.2f} M msg/s with {one[0]['mode']}, the ring {spsc['msgs_per_s'] / 1e6:.2f} M msg/s "
                    "(same rounds)")
        single = next((p for p in pubsub1 if p["mode"] == "poll"), None)
        if single and "one_at_a_time" in rings:
            spsc = rings["one_at_a_time"]
            r = ratio(single["msgs_per_s"], spsc["msgs_per_s"])
            add("1 → 1, 64 B, one message at a time ≥ 0.4× the SPSC ring (one at a time)", r, 0.4,
                r is not None and r >= 0.4,
                f"publish + poll {single['msgs_per_s'] / 1e6:.2f} M msg/s, the ring "
                f"{spsc['msgs_per_s'] / 1e6:.2f} M msg/s (same rounds)")
        # The batched group path, one consumer: at least twice what it was when
        # the target was set (8.4 M msg/s, when the batched SPSC ring moved
        # 65.7 M msg/s on the same machine). The machine's CPU placement has
        # moved both figures several times over since, so the figure judged
        # is the ratio to the batched ring of the same rounds: >= 2 x 8.4 / 65.7.
        grp1 = sorted((p for p in tp["points"] if p["scenario"] == "group" and p.get("consumers") == 1
                       and p.get("ordering") == "none" and "receive_batch+ack_batch" in p["mode"]),
                      key=lambda p: p["msgs_per_s"], reverse=True)
        spsc = rings.get("batch")
        if grp1 and spsc:
            then = 8.4 / 65.7
            r = ratio(grp1[0]["msgs_per_s"], spsc["msgs_per_s"])
            add("group receive_batch+ack_batch, 1 consumer: ≥ 2× the batched ring ratio when set (8.4 ÷ 65.7 "
                "M msg/s)", None if r is None else r / then, 2.0, r is not None and r / then >= 2.0,
                f"{grp1[0]['msgs_per_s'] / 1e6:.2f} M msg/s ({grp1[0]['mode']}, {grp1[0]['keys']} keys) = "
                f"{fmt_ratio(r)} the batched ring's {spsc['msgs_per_s'] / 1e6:.2f} M msg/s (same rounds), against "
                f"{then:.3f}× then")
        # Ordering's price: with >= 16 keys and 2 consumers, per_key >= 0.8x unordered (each API, same rounds).
        grp = [p for p in tp["points"] if p["scenario"] == "group" and p.get("consumers") == 2
               and p.get("keys", 0) >= 16]
        unordered = {(p["mode"], p["keys"]): p for p in grp if p.get("ordering") == "none"}
        for p in grp:
            u = unordered.get((p["mode"], p["keys"]))
            if p.get("ordering") != "per_key" or not u:
                continue
            r = ratio(p["msgs_per_s"], u["msgs_per_s"])
            add(f"group, 2 consumers, {p['keys']} keys, {p['mode']}: per_key ≥ 0.8× unordered", r, 0.8,
                r is not None and r >= 0.8,
                f"per_key {p['msgs_per_s'] / 1e6:.2f}, unordered {u['msgs_per_s'] / 1e6:.2f} M msg/s (same rounds)"
                + (" (oversubscribed)" if p.get("oversubscribed") else ""))
    if insn:
        # In the call, with counter timestamps (the default source); the
        # realtime fallback's figure beside it. Older reports have one
        # figure per label: the loop's, less its overhead.
        by = {(r.get("timestamps", "tsc"), r["label"]): r for r in insn["results"]}
        for label, lim in (("publish 64B", 100), ("poll 64B", 80)):
            r = by.get(("tsc", label))
            if r:
                v = r.get("in_call_per_op", r["insn_per_op"])
                q = by.get(("realtime", label))
                rt = f"; realtime stamps {q['in_call_per_op']:.0f}" if q and "in_call_per_op" in q else ""
                add(f"callgrind: {label} ≤ {lim} instructions", v, lim, v <= lim,
                    f"in the call, counter stamps{rt}; with the caller's loop {r['insn_per_op']:.0f} "
                    "(scripts/insn.sh)", unit="insn")
    if micro:
        m = micro_times(micro)
        a, b = m.get("BM_PublishFanout/1"), m.get("BM_PublishFanout/16")
        if a and b:
            r = ratio(b, a)
            add("publish cost with 16 idle subscribers ≤ 1.2× with 1 (micro-benchmark)", r, 1.2, r <= 1.2,
                f"{b:.1f} ns vs {a:.1f} ns")
    return out


# --- micro ---------------------------------------------------------------------------

def micro_times(micro):
    """ns per message of CPU time (a single-threaded benchmark that is preempted
    loses wall time, not CPU time): the median aggregate where repetitions ran,
    else the run."""
    scale = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
    runs, medians = {}, {}
    for b in micro.get("benchmarks", []):
        name = b.get("run_name", b["name"])
        per = b.get("msgs_per_iter", 1.0) or 1.0
        v = b["cpu_time"] * scale.get(b.get("time_unit", "ns"), 1.0) / per
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                medians[name] = v
        elif "error_occurred" not in b:
            runs.setdefault(name, v)
    runs.update(medians)
    return runs


MICRO_ORDER = [
    ("BM_ClockMonotonic", "one clock_gettime(CLOCK_MONOTONIC): the yardstick"),
    ("BM_Publish/drop_oldest", "publish 64 B, no reader (the message is stamped with CLOCK_REALTIME)"),
    ("BM_Publish/user_timestamp", "the same, timestamp given by the caller: no clock read"),
    ("BM_Publish/block_consumed", "publish 64 B on a block channel with a reader (gate check)"),
    ("BM_PublishSize", "publish N bytes, no reader"),
    ("BM_ClaimCommit", "try_claim + write 64 B + commit"),
    ("BM_Poll/empty", "poll with nothing new (one spin of a busy subscriber)"),
    ("BM_PublishPoll", "publish + copy-out poll, one message at a time"),
    ("BM_PublishReadBatch", "publish N, then one zero-copy read_batch of N"),
    ("BM_PublishPollBatch", "publish N, then one copy-out poll_batch of N"),
    ("BM_ReceiveAck/one_by_one", "publish + receive + ack"),
    ("BM_ReceiveAck/batched", "receive + ack (publishing untimed)"),
    ("BM_ReceiveAck/batch_api", "publish 64, receive_batch 64, ack_batch 64"),
    ("BM_PublishFanout", "publish 64 B with N idle subscribers"),
]


def micro_key(name):
    for i, (prefix, _) in enumerate(MICRO_ORDER):
        if name == prefix or name.startswith(prefix + "/"):
            tail = name[len(prefix) + 1:]
            return (i, int(tail) if tail.isdigit() else 0, name)
    return (len(MICRO_ORDER), 0, name)


def micro_what(name):
    i = micro_key(name)[0]
    return MICRO_ORDER[i][1] if i < len(MICRO_ORDER) else ""


# --- plots ---------------------------------------------------------------------------

# Legend to the right of the plot (many transports), or inside it (a few series).
SIDE_LEGEND = {"fontsize": 7, "loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}
INNER_LEGEND = {"fontsize": 8}


def ours(name):
    """Whether a transport is shmbus or the floor (drawn solid; baselines dashed)."""
    return name.startswith(("shmbus", "floor"))


def exact_ticks(ax, xs):
    """Ticks on the x axis at exactly xs, labelled as plain numbers."""
    from matplotlib.ticker import FixedLocator, FuncFormatter
    ax.xaxis.set_major_locator(FixedLocator(xs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))


def save_plot(fig, ax, path, title, xlabel, ylabel, legend, y_from_zero=False):
    """Labels one plot, adds its grid and legend (keyword arguments), writes it
    to path and closes it. Returns path."""
    import matplotlib.pyplot as plt
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if y_from_zero:
        ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(**legend)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path


def plots(pp, tp, micro, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter

    files = []
    if pp:
        run = pick_run(pp, main_size(pp))
        fig, ax = plt.subplots(figsize=(8, 5))
        for name, t in run["transports"].items():
            xs, ys = [], []
            for p, v in t["curve"]:
                if p >= 100:
                    continue
                xs.append(1.0 / (1.0 - p / 100.0))
                ys.append(max(v, 1))
            ax.plot(xs, ys, label=LABELS.get(name, name), lw=1.8 if ours(name) else 1.1,
                    ls="-" if ours(name) else "--", color=color(name))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = [1, 2, 10, 100, 1000, 10000, 100000]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: {1: "0", 2: "50", 10: "90", 100: "99", 1000: "99.9",
                                                                   10000: "99.99", 100000: "99.999"}.get(int(round(x)), "")))
        files.append(save_plot(fig, ax, os.path.join(out, "latency_percentiles.png"),
                               f"Ping-pong latency by percentile, {run['size']}-byte messages",
                               "percentile", "round trip (ns, log)", SIDE_LEGEND))

        fig, ax = plt.subplots(figsize=(8, 5))
        names = list(run["transports"].keys())
        for name in names:
            xs, ys = [], []
            for r in pp["runs"]:
                t = r["transports"].get(name)
                if t:
                    xs.append(r["size"])
                    ys.append(t["p50"])
            ax.plot(xs, ys, marker="o", ms=3, label=LABELS.get(name, name), color=color(name),
                    ls="-" if ours(name) else "--")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        exact_ticks(ax, [r["size"] for r in pp["runs"]])
        files.append(save_plot(fig, ax, os.path.join(out, "latency_by_size.png"), "Ping-pong p50 by message size",
                               "message size (bytes)", "p50 round trip (ns, log)", SIDE_LEGEND))
    if tp:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for pol in ("drop_oldest", "block"):
            pts = sorted((p for p in tp["points"] if p["scenario"] == "fanout" and p["policy"] == pol),
                         key=lambda p: p["subscribers"])
            if pts:
                ax.plot([p["subscribers"] for p in pts], [p["ns_per_publish"] for p in pts], marker="o",
                        label=f"processes, {pol} (median chunk)")
        if micro:
            m = micro_times(micro)
            xs = [n for n in (1, 2, 4, 8, 16) if f"BM_PublishFanout/{n}" in m]
            if xs:
                ax.plot(xs, [m[f"BM_PublishFanout/{n}"] for n in xs], marker="s", ls="--",
                        label="idle subscribers (micro-benchmark)")
        ax.set_xscale("log", base=2)
        exact_ticks(ax, [1, 2, 4, 8, 16])
        files.append(save_plot(fig, ax, os.path.join(out, "fanout.png"),
                               "Fan-out: publish cost by subscriber count (64 B)", "subscribers", "ns per publish",
                               INNER_LEGEND, y_from_zero=True))

        fig, ax = plt.subplots(figsize=(7, 4.2))
        series = {}
        for p in tp["points"]:
            if p["scenario"] != "pubsub" or pauses(p):  # not a user figure
                continue
            key = f"{p['transport']}, {p['mode']}"
            series.setdefault(key, []).append((p["publishers"], p["msgs_per_s"] / 1e6))
        for key, pts in sorted(series.items()):
            pts.sort()
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=key,
                    ls="-" if key.startswith("shmbus") else "--")
        exact_ticks(ax, sorted({x for pts in series.values() for x, _ in pts}))
        files.append(save_plot(fig, ax, os.path.join(out, "throughput.png"),
                               "Throughput by producer count, one reader",
                               "producers (processes; moodycamel: threads)", "M messages/s (64 B)", INNER_LEGEND,
                               y_from_zero=True))
    return files


# --- the markdown ------------------------------------------------------------------------

def throughput_table(pts, rings, md):
    """The throughput points, each with its ratio to both SPSC ring rows."""
    one, batch = rings.get("one_at_a_time"), rings.get("batch")
    md.append("| scenario | transport | producers | readers | size | reader API | M msg/s | "
              "÷ SPSC ring, one at a time | ÷ SPSC ring, batch | ns/publish (median chunk) | note |")
    md.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for p in pts:
        readers = p.get("subscribers", p.get("consumers", ""))
        note = []
        if p.get("oversubscribed"):
            note.append("oversubscribed")
        if p.get("lost"):
            note.append(f"lost {p['lost']} (drop_oldest)")
        if p.get("threads"):
            note.append("threads, one process")
        if p["scenario"] in ("fanout", "group") or p["policy"] != "block":
            note.append(p["policy"])
        if "ordering" in p:
            note.append(f"{p['ordering']}, {p['keys']} keys")
        r1 = ratio(p["msgs_per_s"], one["msgs_per_s"]) if one else None
        rb = ratio(p["msgs_per_s"], batch["msgs_per_s"]) if batch else None
        nsp = f"{p['ns_per_publish']:.1f}" if "ns_per_publish" in p else ""
        md.append(f"| {p['scenario']} | {p['transport']} | {p['publishers']} | {readers} | {p['size']} | "
                  f"{p['mode']} | {p['msgs_per_s'] / 1e6:.2f} | {fmt_ratio(r1)} | {fmt_ratio(rb)} | {nsp} | "
                  f"{', '.join(note)} |")


def ordering_table(pts, md):
    """Each per_key group point against the unordered point of the same
    consumers, reader API and keys (the same rounds)."""
    unordered = {(p["consumers"], p["mode"], p["keys"]): p for p in pts
                 if p.get("scenario") == "group" and p.get("ordering") == "none"}
    rows = []
    for p in pts:
        if p.get("scenario") != "group" or p.get("ordering") != "per_key":
            continue
        u = unordered.get((p["consumers"], p["mode"], p["keys"]))
        if u:
            rows.append((p, u))
    if not rows:
        return
    md.append("#### Ordered groups: per_key ÷ unordered, same keys, same rounds")
    md.append("")
    md.append("| consumers | reader API | keys | unordered M msg/s | per_key M msg/s | per_key ÷ unordered | note |")
    md.append("|---|---|---|---|---|---|---|")
    for p, u in rows:
        note = "oversubscribed" if p.get("oversubscribed") else ""
        md.append(f"| {p['consumers']} | {p['mode']} | {p['keys']} | {u['msgs_per_s'] / 1e6:.2f} | "
                  f"{p['msgs_per_s'] / 1e6:.2f} | {fmt_ratio(ratio(p['msgs_per_s'], u['msgs_per_s']))} | {note} |")


def insn_section(insn, md):
    """Instructions per operation from scripts/insn.sh."""
    md.append("### Instructions per operation (callgrind, one thread)")
    md.append("")
    md.append(f"`scripts/insn.sh`: {insn['ops']} operations of each kind through the public API, one thread, "
              f"counted by callgrind ({insn['valgrind']}). *In the call*: from the public call's entry to its "
              "return, library calls included. *With the caller*: the driver's loop around it (arguments, "
              f"result check), less the empty loop ({insn['loop_insn_per_op']:.1f} per operation). Exact counts: "
              "the same on a busy machine. *tsc*: counter timestamps, the default source where the kernel "
              "trusts the counter (`SHMBUS_TSC=1`); *realtime*: the fallback (`SHMBUS_TSC=0`), whose clock read "
              "valgrind counts as its glibc wrapper only (a system call there, the vDSO natively).")
    md.append("")
    rows = insn["results"]
    if rows and "in_call_per_op" in rows[0]:
        by = {(r["timestamps"], r["label"]): r for r in rows}
        md.append("| operation | tsc: in the call | tsc: with the caller | realtime: in the call | "
                  "realtime: with the caller |")
        md.append("|---|---|---|---|---|")
        for r in rows:
            if r["timestamps"] != "tsc":
                continue
            q = by.get(("realtime", r["label"]), r)
            md.append(f"| {r['label']} | {r['in_call_per_op']:.0f} | {r['insn_per_op']:.0f} | "
                      f"{q['in_call_per_op']:.0f} | {q['insn_per_op']:.0f} |")
    else:
        md.append("| operation | instructions |")
        md.append("|---|---|")
        for r in rows:
            md.append(f"| {r['label']} | {r['insn_per_op']:.0f} |")

def archive_section(arch, md):
    c = arch["config"]
    md.append("### Disk archive (shmbus_archive_bench)")
    md.append("")
    md.append(f"{c['mb']} MiB of records per point in `{c['dir']}`, appends of {c['batch_kb']} KiB, median of "
              f"{c['repeat']} rounds; each point's ratio is to `disk` (dd's 1 MiB write loop) measured just before "
              f"it in the same round with the same sync: `never` (the page cache: what the CPU and the kernel's "
              f"copy allow), `batch` (an fdatasync per batch's worth of bytes) or `end` (one sync at the end, "
              f"timed: the rate the disk itself takes, as dd conv=fdatasync). `archive`: the segment writer "
              f"alone; `archiver`: a publisher thread (publish_batch of 16) through the ring and shmbus::Archiver "
              f"to disk; `subscriber`: the same publisher with a plain copying subscriber instead, the bus's own "
              f"bound (\"÷ bus\" is the archiver's ratio to it); `replay`: reading the archive back (the page "
              f"cache), every CRC checked.")
    md.append("")
    md.append("| point | payload | fsync | MB/s | M msg/s | ÷ disk | ÷ bus |")
    md.append("|---|---|---|---|---|---|---|")
    for p in arch["points"]:
        bus = fmt_ratio(p["ratio_to_subscriber"]) if "ratio_to_subscriber" in p else ""
        md.append(f"| {p['point']} | {p['size']} B | {p['fsync']} | {p['mb_per_s']:.0f} | "
                  f"{p['msgs_per_s'] / 1e6:.2f} | {fmt_ratio(p['ratio_to_disk'])} | {bus} |")
    md.append("")


def markdown(pp, sleep, tp, micro, tg, img_prefix, insn=None, arch=None):
    md = []
    host = (pp or tp or {}).get("host", {})
    if host:
        md.append(f"Host: {host.get('cpu_model', '?')}, {host.get('online_cpus', '?')} CPUs online, "
                  f"allowed {host.get('allowed_cpus', '?')}.")
        md.append("")
    if tg:
        md.append("### Targets")
        md.append("")
        md.append("| target | measured | met | detail |")
        md.append("|---|---|---|---|")
        for t in tg:
            v, unit = t["measured"], t.get("unit", "M msg/s" if "M msg/s" in t["target"] else "×")
            vs = "n/a" if v is None else {"×": f"{v:.2f}×", "insn": f"{v:.0f} insn"}.get(unit, f"{v:.2f} {unit}")
            met = "info" if t["met"] is None else ("yes" if t["met"] else "**no**")
            md.append(f"| {t['target']} | {vs} | {met} | {t['detail']} |")
        md.append("")
    if pp:
        c = pp["config"]
        clk = pp["clock_pair"]
        md.append("### Ping-pong latency (round trip, two processes pinned to two CPUs)")
        md.append("")
        md.append(f"{c['rounds']} timed round trips per transport and size, after {c['warmup']} warm-up; "
                  f"{c['blocks']} interleaved blocks of each transport, each led by {c['lead_in']} untimed round "
                  f"trips; CPUs {c['cpus']}; channel policy `{c['policy']}`. Each figure is followed by its ratio "
                  f"to the floor measured in the same run; \"paired\" is the median over the blocks of the block's "
                  f"percentile ÷ the floor's in the block of the same index (they ran back to back), which a change "
                  f"of CPU placement during the run does not skew; where the minimal SPSC ring ran (one ring per "
                  f"direction, cached indices, copy-out: a minimal copying transport), the same paired ratios "
                  f"against it follow. The clock pair inside every sample costs "
                  f"{fmt_ns(clk['p50'])} at p50 ({fmt_ns(clk['p99'])} at p99). \"sleeps/rt\" is voluntary context "
                  f"switches per round trip of the pinger / ponger thread.")
        md.append("")
        for run in pp["runs"]:
            latency_table(run, md)
            md.append("")
        run = pick_run(pp, main_size(pp))
        md.append(f"#### shmbus against each baseline, {run['size']} B (ratio < 1: shmbus is faster)")
        md.append("")
        versus_table(run, md)
        md.append("")
        if img_prefix is not None:
            md.append(f"![latency by percentile]({img_prefix}latency_percentiles.png)")
            md.append("")
            md.append(f"![p50 by size]({img_prefix}latency_by_size.png)")
            md.append("")
    if sleep:
        run = sleep["runs"][0]
        md.append(f"### Sleeping waiters: a {sleep['config']['gap_us']} µs pause before each round trip")
        md.append("")
        md.append(f"{sleep['config']['rounds']} round trips, {run['size']} B. The pause lets a blocking waiter fall "
                  "asleep, so this measures the wake-up path (futex for shmbus, the kernel for eventfd).")
        md.append("")
        latency_table(run, md)
        md.append("")
    if tp:
        md.append("### Throughput")
        md.append("")
        md.append(f"Messages per point: {tp['config']['messages']} (fan-out and groups: a quarter), median of "
                  f"{tp['config']['repeat']} rounds (each round runs every point once); ring capacity "
                  f"{tp['config']['capacity']}. \"÷ SPSC ring\": the ratio to the minimal SPSC ring between two "
                  "processes, measured in the same rounds, whose reader takes one message at a time (copy-out, "
                  "one tail store each: the counterpart of poll) or everything there is (one tail store per "
                  "batch: the counterpart of read_batch); neither side of the ring ever pauses. "
                  "\"oversubscribed\": more processes than CPUs, waits yield; such figures measure the scheduler "
                  "as much as the bus.")
        md.append("")
        pts = tp["points"]
        rings = spsc_rows(pts)
        throughput_table([p for p in pts if not pauses(p)], rings, md)
        md.append("")
        paused = [p for p in pts if pauses(p)]
        if paused:
            md.append("#### Not a user figure: a reader that pauses")
            md.append("")
            md.append("The reader pauses 2 µs whenever it finds nothing, so the publisher runs ahead and the "
                      "slot lines move in bulk. It tells what the cache lines allow, not what a subscriber gets "
                      "(a subscriber that pauses adds up to the pause to every message's latency); no target "
                      "is judged on it.")
            md.append("")
            throughput_table(paused, rings, md)
            md.append("")
        ordering_table(pts, md)
        md.append("")
        fan = [p for p in pts if p["scenario"] == "fanout"]
        if fan:
            md.append("#### Fan-out: publish cost by subscriber count (ratio to 1 subscriber)")
            md.append("")
            md.append("| policy | " + " | ".join(str(p["subscribers"]) for p in fan if p["policy"] == fan[0]["policy"]) + " |")
            md.append("|---|" + "---|" * len([p for p in fan if p["policy"] == fan[0]["policy"]]))
            for pol in ("drop_oldest", "block"):
                row = [p for p in fan if p["policy"] == pol]
                if not row:
                    continue
                base = row[0]["ns_per_publish"]
                md.append(f"| {pol} | " + " | ".join(f"{p['ns_per_publish']:.1f} ns ({fmt_ratio(ratio(p['ns_per_publish'], base))})"
                                                     for p in row) + " |")
            md.append("")
        if img_prefix is not None:
            md.append(f"![fan-out]({img_prefix}fanout.png)")
            md.append("")
            md.append(f"![throughput]({img_prefix}throughput.png)")
            md.append("")
    if micro:
        m = micro_times(micro)
        md.append("### Micro-benchmarks (one thread, Google Benchmark, CPU time, median of the repetitions)")
        md.append("")
        clock = m.get("BM_ClockMonotonic")
        md.append("| benchmark | what one message costs | ns per message | ÷ clock_gettime |")
        md.append("|---|---|---|---|")
        for name, v in sorted(m.items(), key=lambda kv: micro_key(kv[0])):
            md.append(f"| {name} | {micro_what(name)} | {v:.1f} | {fmt_ratio(ratio(v, clock))} |")
        md.append("")
    if insn:
        insn_section(insn, md)
        md.append("")
    if arch:
        archive_section(arch, md)
    return "\n".join(md) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--in", dest="inp", required=True, help="directory with the programs' JSON")
    ap.add_argument("--out", required=True, help="directory for results.md, results.json and the PNGs")
    ap.add_argument("--img-prefix", default="", help="path prefix of the images in results.md")
    ap.add_argument("--require-plots", action="store_true", help="exit 77 if matplotlib is missing")
    ap.add_argument("--no-plots", action="store_true")
    a = ap.parse_args()

    pp = load(os.path.join(a.inp, "pingpong.json"))
    sleep = load(os.path.join(a.inp, "pingpong_sleep.json"))
    tp = load(os.path.join(a.inp, "throughput.json"))
    micro = load(os.path.join(a.inp, "micro.json"))
    insn = load(os.path.join(a.inp, "insn.json"))
    arch = load(os.path.join(a.inp, "archive.json"))
    if not any((pp, sleep, tp, micro, insn, arch)):
        print(f"report.py: no results in {a.inp}", file=sys.stderr)
        return 1
    os.makedirs(a.out, exist_ok=True)
    tg = targets(pp, sleep, tp, micro, insn, arch)

    files = []
    if not a.no_plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            if a.require_plots:
                print("report.py: python3-matplotlib is not installed; plots skipped", file=sys.stderr)
                return 77
            print("report.py: warning: python3-matplotlib is not installed; no plots", file=sys.stderr)
        else:
            files = plots(pp, tp, micro, a.out)
    md = markdown(pp, sleep, tp, micro, tg, a.img_prefix if files else None, insn, arch)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(md)
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"pingpong": pp, "pingpong_sleep": sleep, "throughput": tp, "micro": micro, "insn": insn,
                   "archive": arch, "targets": tg}, f,
                  indent=1)
    for f in files:
        if os.path.getsize(f) == 0:
            print(f"report.py: empty plot {f}", file=sys.stderr)
            return 1
    print(f"report.py: wrote {os.path.join(a.out, 'results.md')}, results.json" +
          (", " + ", ".join(os.path.basename(f) for f in files) if files else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
