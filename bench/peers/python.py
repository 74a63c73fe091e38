#!/usr/bin/env python3
"""Python's multiprocessing on the bench's workloads, for the table of bench/run.js.

    python3 bench/peers/python.py fork|spawn [W1,W2,...]

Prints one JSON line per figure, {"system", "workload", "value", "unit", "n"}, with the keys that
bench/nmp_runner.js prints for ours and the sizes of bench/sizes.json. Standard library only.
Task functions live at module level: with spawn, a child imports this file and finds them by name.
"""
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import time
from array import array
from multiprocessing import shared_memory

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "sizes.json")) as f:
    N = json.load(f)

SYSTEM = "python-?"
WORKLOADS = ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "W9"]


def emit(workload, value, unit, n):
    line = {"system": SYSTEM, "workload": workload, "value": round(float(value), 6), "unit": unit, "n": n}
    print(json.dumps(line), flush=True)


# perf_counter is CLOCK_MONOTONIC on Linux, so stamps taken in two processes compare.
now = time.perf_counter


def pct(xs, p):
    """The p-quantile with linear interpolation between ranks, as bench/common.js computes it."""
    s = sorted(xs)
    k = (len(s) - 1) * p
    f, c = math.floor(k), math.ceil(k)
    return s[f] + (s[c] - s[f]) * (k - f)


# ------------------------------------------------------------------ what children and workers run

def empty():
    pass


def identity(x):
    return x


def square(x):
    return x * x


def nap(ms):
    time.sleep(ms / 1e3)
    return os.getpid()


def cpu_job(n):
    """The tutorial's job, as the issue gives it."""
    return sum(i + i**2 + i**3 for i in range(n))


def produce(ready, go, q, n, size):
    ready.set()
    go.wait()
    if size:
        b = bytes(size)
        for _ in range(n):
            q.put(b)
    else:
        for i in range(n):
            q.put(i)


def send_bytes(ready, go, conn, n, size):
    ready.set()
    go.wait()
    b = bytes(size)
    for _ in range(n):
        conn.send_bytes(b)


def locked_increments(lock, v, n, barrier, stamps, k):
    barrier.wait()
    stamps[2 * k] = now()
    for _ in range(n):
        with lock:
            v.value += 1
    stamps[2 * k + 1] = now()


def wait_for(cell, index, value):
    while cell[index] != value:
        time.sleep(0.00005)


def wake_waiter(lock, state, lat, n):
    # state: [0] release stamp, [1] round the waiter is about to block in, [2] round the parent
    # holds the lock for, [3] rounds done.
    for i in range(n):
        wait_for(state, 2, i + 1)
        state[1] = i + 1
        lock.acquire()
        lat[i] = (now() - state[0]) * 1e6
        lock.release()
        state[3] = i + 1


def sum_shared(name, reps, out):
    shm = shared_memory.SharedMemory(name=name)
    view = shm.buf.cast("d")
    ts, s = [], None
    for _ in range(reps):
        t0 = now()
        s = sum(view)
        ts.append(now() - t0)
    out.put((s, statistics.median(ts)))
    view.release()
    shm.close()


# ------------------------------------------------------------------ /proc readings

def memory_of(pids):
    """Mean VmRSS and PSS (MiB) of processes."""
    def kib(path, field):
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise ValueError(f"no {field} in {path}")
    rss = [kib(f"/proc/{pid}/status", "VmRSS") / 1024 for pid in pids]
    pss = [kib(f"/proc/{pid}/smaps_rollup", "Pss") / 1024 for pid in pids]
    return statistics.mean(rss), statistics.mean(pss)


CLK_TCK = os.sysconf("SC_CLK_TCK")


def busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]                 # all but idle and iowait


def ticks_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return 0
    fields = s[s.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def probe(pids):
    return busy_ticks(), sum(ticks_of(p) for p in pids), now()


def foreign_load(a, b):
    """Mean cores used by processes other than ours between two probes."""
    return max(0.0, ((b[0] - a[0]) - (b[1] - a[1])) / CLK_TCK / (b[2] - a[2]))


# ------------------------------------------------------------------ workloads

def w1(ctx):
    p = ctx.Process(target=empty)
    p.start()
    p.join()
    ts = []
    for _ in range(N["W1"]):
        t0 = now()
        p = ctx.Process(target=empty)
        p.start()
        p.join()
        ts.append((now() - t0) * 1e3)
    emit("W1.start_join.median", statistics.median(ts), "ms", N["W1"])
    emit("W1.start_join.p95", pct(ts, 0.95), "ms", N["W1"])


def w2(ctx):
    ts = []
    for _ in range(N["W2"]):
        t0 = now()
        pool = ctx.Pool(2)
        r = pool.apply(identity, (1,))
        ts.append((now() - t0) * 1e3)
        assert r == 1
        pool.terminate()
        pool.join()
    emit("W2.pool_startup.first", ts[0], "ms", 1)
    emit("W2.pool_startup", statistics.median(ts), "ms", N["W2"])


def w9(pool):
    pool.map(nap, [N["W9_TASK_MS"]] * 2, chunksize=1)
    time.sleep(N["W9_IDLE_MS"] / 1e3)
    rss, pss = memory_of([w.pid for w in pool._pool])
    emit("W9.idle_worker_rss", rss, "MiB", 2)
    emit("W9.idle_worker_pss", pss, "MiB", 2)


def w4(pool):
    for i in range(N["W4_WARMUP"]):
        pool.apply(identity, (i,))
    ts = []
    for i in range(N["W4"]):
        t0 = now()
        r = pool.apply(identity, (i,))
        ts.append((now() - t0) * 1e6)
        assert r == i
    emit("W4.apply_roundtrip.median", statistics.median(ts), "us", N["W4"])
    emit("W4.apply_roundtrip.mean", statistics.mean(ts), "us", N["W4"])
    emit("W4.apply_roundtrip.p95", pct(ts, 0.95), "us", N["W4"])


def w3(pool):
    n = N["W3"]
    data = list(range(n))
    for name, chunksize in (("default", None), ("chunk1", 1), ("chunk12500", N["W3_CHUNK"]), ("default_again", None)):
        t0 = now()
        res = pool.map(square, data) if chunksize is None else pool.map(square, data, chunksize=chunksize)
        t = now() - t0
        assert len(res) == n and res[-1] == (n - 1) ** 2
        emit(f"W3.map.{name}.total", t * 1e3, "ms", n)
        emit(f"W3.map.{name}.per_item", t * 1e6 / n, "us", n)


def w8(pool):
    n = 20_000
    while True:
        t0 = now()
        cpu_job(n)
        t = now() - t0
        if t > 0.1:
            break
        n *= 2
    size = int(n * N["W8_TASK_MS"] / 1e3 / t)
    tasks = N["W8_TASKS"]
    pids = [os.getpid()] + [w.pid for w in pool._pool]
    attempts = []
    for _ in range(2):                          # one retry if others disturbed it, as in common.js
        p0 = probe(pids)
        seq = [cpu_job(size) for _ in range(tasks)]
        p1 = probe(pids)
        par = pool.map(cpu_job, [size] * tasks, chunksize=1)
        p2 = probe(pids)
        assert seq == par
        foreign = max(foreign_load(p0, p1), foreign_load(p1, p2))
        attempts.append((foreign, p1[2] - p0[2], p2[2] - p1[2]))
        if foreign < 0.25:
            break
    foreign, t_seq, t_par = next((a for a in attempts if a[0] < 0.25), min(attempts))
    emit("W8.cpu.attempts", len(attempts), "count", tasks)
    emit("W8.cpu.foreign_load", foreign, "cores", tasks)
    emit("W8.cpu.N", size, "iterations", tasks)
    emit("W8.cpu.task", t_seq * 1e3 / tasks, "ms", tasks)
    emit("W8.cpu.seq_total", t_seq * 1e3, "ms", tasks)
    emit("W8.cpu.pool_total", t_par * 1e3, "ms", tasks)
    emit("W8.cpu.speedup", t_seq / t_par, "x", tasks)


def w5(ctx):
    def timed(target, args, consume):
        """Starts the producer, lets it go, and times `consume()` until the last item is in."""
        ready, go = ctx.Event(), ctx.Event()
        p = ctx.Process(target=target, args=(ready, go) + args)
        p.start()
        ready.wait()
        t0 = now()
        go.set()
        got = consume()
        t = now() - t0
        p.join()
        return got, t

    ints, count, size = N["W5_INTS"], N["W5_BYTES_N"], N["W5_BYTES"]

    q = ctx.Queue()
    got, t = timed(produce, (q, ints, 0), lambda: sum(1 for _ in range(ints) if q.get() is not None))
    assert got == ints
    emit("W5.queue.small_ints.throughput", ints / t, "msgs/s", ints)

    got, t = timed(produce, (q, count, size), lambda: sum(len(q.get()) for _ in range(count)))
    assert got == count * size
    emit("W5.queue.bytes64KiB.throughput", got / t / 1e6, "MB/s", count)
    emit("W5.queue.bytes64KiB.msgs", count / t, "msgs/s", count)
    q.close()

    # The same bytes through a Pipe, received with recv_bytes_into into one buffer.
    reader, writer = ctx.Pipe(duplex=False)
    into = bytearray(size)
    got, t = timed(send_bytes, (writer, count, size), lambda: sum(reader.recv_bytes_into(into) for _ in range(count)))
    assert got == count * size
    emit("W5.pipe.bytes64KiB_into.throughput", got / t / 1e6, "MB/s", count)
    reader.close()
    writer.close()


def w6(ctx):
    lock = ctx.Lock()
    acquire, release = lock.acquire, lock.release
    reps = []
    for _ in range(N["W6A_REPS"]):
        t0 = now()
        for _ in range(N["W6A"]):
            acquire()
            release()
        reps.append(now() - t0)
    emit("W6.lock.uncontended", N["W6A"] / statistics.median(reps), "pairs/s", N["W6A"])

    # Two processes × W6B increments of a raw Value under one Lock, started behind a Barrier.
    lock = ctx.Lock()
    v = ctx.Value("i", 0, lock=False)
    barrier = ctx.Barrier(2)
    stamps = ctx.RawArray("d", 4)
    ps = [ctx.Process(target=locked_increments, args=(lock, v, N["W6B"], barrier, stamps, k)) for k in (0, 1)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    total = max(stamps[1], stamps[3]) - min(stamps[0], stamps[2])
    n = 2 * N["W6B"]
    emit("W6.lock.contended_2proc.total", total * 1e3, "ms", n)
    emit("W6.lock.contended_2proc.ops", n / total, "ops/s", n)
    emit("W6.lock.contended_2proc.final_value", v.value, "count", n)
    emit("W6.lock.contended_2proc.correct", 1 if v.value == n else 0, "bool", n)

    # Wake-up: this process releases a Lock that another process blocks on in acquire(); the
    # latency is from the release to acquire() returning there. Python has no async acquire, so
    # this is its blocking one, timed as nmp_runner times our async one.
    # The first WAKE_WARMUP rounds are not counted, as for every system the bench times.
    rounds = N["WAKE_WARMUP"] + N["WAKE"]
    lock = ctx.Lock()
    state = ctx.RawArray("d", 4)
    lat = ctx.RawArray("d", rounds)
    child = ctx.Process(target=wake_waiter, args=(lock, state, lat, rounds))
    child.start()
    for i in range(rounds):
        wait_for(state, 3, i)
        lock.acquire()
        state[2] = i + 1
        wait_for(state, 1, i + 1)
        time.sleep(0.001)                       # let the waiter reach the kernel
        state[0] = now()
        lock.release()
    child.join()
    counted = lat[N["WAKE_WARMUP"]:]
    emit("W6.lock.wakeup_blocking.median", statistics.median(counted), "us", N["WAKE"])
    emit("W6.lock.wakeup_blocking.p95", pct(counted, 0.95), "us", N["WAKE"])


def w7(ctx):
    # Python's fastest stdlib path to a shared float64 array: shared_memory viewed as doubles.
    n = N["W7"]
    shm = shared_memory.SharedMemory(create=True, size=n * 8)
    try:
        view = shm.buf.cast("d")
        view[:] = array("d", range(n))
        view.release()
        out = ctx.Queue()
        p = ctx.Process(target=sum_shared, args=(shm.name, N["W7_REPS"], out))
        p.start()
        s, t = out.get()
        p.join()
        assert s == n * (n - 1) / 2
        emit("W7.sum.shm_memoryview.time", t * 1e3, "ms", n)
        emit("W7.sum.shm_memoryview.bandwidth", n * 8 / t / 1e9, "GB/s", n)
    finally:
        shm.close()
        shm.unlink()


def main():
    global SYSTEM
    method = sys.argv[1] if len(sys.argv) > 1 else "fork"
    which = sys.argv[2].split(",") if len(sys.argv) > 2 else WORKLOADS
    unknown = [w for w in which if w not in WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workload {unknown}")
    SYSTEM = f"python-{method}"
    ctx = mp.get_context(method)
    t0 = now()
    if "W2" in which:
        w2(ctx)
    if any(w in which for w in ("W9", "W4", "W3", "W8")):
        pool = ctx.Pool(2)
        try:
            for name, run in (("W9", w9), ("W4", w4), ("W3", w3), ("W8", w8)):
                if name in which:
                    run(pool)
        finally:
            pool.terminate()
            pool.join()
    for name, run in (("W1", w1), ("W5", w5), ("W6", w6), ("W7", w7)):
        if name in which:
            run(ctx)
    emit("runner.wall", now() - t0, "s", 1)


if __name__ == "__main__":
    main()
