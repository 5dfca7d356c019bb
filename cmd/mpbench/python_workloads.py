"""CPython multiprocessing on the workloads of multiproc's Go benchmarks.

Each workload here is defined as its Go benchmark is (named in its
docstring): the same processes, the same messages, the same part timed.
mpbench runs this file beside `go test -bench` and compares the two.

Usage: python3 python_workloads.py [--quick] [--count N] [--only KEY,...]

Output, on stdout: a first line `python VERSION cpus N start_method M`,
then one line per measurement, `KEY VALUE UNIT`, --count lines per
workload; UNIT is ns/op (lower is better) or msgs/s, tasks/s (higher is
better). Progress and errors go to stderr.
"""

import argparse
import multiprocessing as mp
import os
import sys
import time


def noop():
    pass


def identity(x):
    return x


def process_start(n, method):
    """BenchmarkProcessStartJoin: start a child running a no-op, join it."""
    ctx = mp.get_context(method)
    t = time.perf_counter()
    for _ in range(n):
        p = ctx.Process(target=noop)
        p.start()
        p.join()
    return (time.perf_counter() - t) / n * 1e9


def process_start_fork(n):
    return process_start(n, "fork")


def process_start_spawn(n):
    return process_start(n, "spawn")


def lock_uncontended(n):
    """BenchmarkLockUncontended/AcquireRelease: one acquire and release,
    the lock always free."""
    lock = mp.Lock()
    acquire, release = lock.acquire, lock.release
    t = time.perf_counter()
    for _ in range(n):
        acquire()
        release()
    return (time.perf_counter() - t) / n * 1e9


def lock_hammer(lock, n, ready, start, done):
    ready.set()
    start.wait()
    for _ in range(n):
        lock.acquire()
        lock.release()
    done.set()


def lock_contended(n):
    """BenchmarkLockContended: this process and a child take turns at one
    lock as fast as they can, n acquisitions between them; the time per
    acquisition, from the start signal until both are done."""
    lock, ready, start, done = mp.Lock(), mp.Event(), mp.Event(), mp.Event()
    mine = n // 2
    p = mp.Process(target=lock_hammer, args=(lock, n - mine, ready, start, done))
    p.start()
    ready.wait()
    t = time.perf_counter()
    start.set()
    for _ in range(mine):
        if not lock.acquire(False):
            lock.acquire()
        lock.release()
    done.wait()
    el = time.perf_counter() - t
    p.join()
    return el / n * 1e9


def produce(q, n, item):
    for _ in range(n):
        q.put(item)


def produce_ints(q, n):
    for i in range(n):
        q.put(i)


def queue_rate(n, target, args):
    q = mp.Queue(1024)
    p = mp.Process(target=target, args=(q,) + args)
    # As in the Go benchmarks, the producer's start is inside the timing.
    t = time.perf_counter()
    p.start()
    get = q.get
    for _ in range(n):
        get()
    el = time.perf_counter() - t
    p.join()
    return n / el


def queue_small(n):
    """BenchmarkQueueSmall: a producer process puts n ints on a
    Queue(1024), this process gets them."""
    return queue_rate(n, produce_ints, (n,))


def queue_4k(n):
    """BenchmarkQueue4K/Get: the same with 4096-byte items, each got as a
    new object."""
    return queue_rate(n, produce, (n, bytes(4096)))


def echo(conn, ready):
    ready.set()
    while True:
        m = conn.recv_bytes()
        if not m:
            return
        conn.send_bytes(m)


def pipe_rtt(n):
    """BenchmarkPipeRoundTrip: 64 bytes to a child process over a duplex
    Pipe, and back."""
    a, b = mp.Pipe(True)
    ready = mp.Event()
    p = mp.Process(target=echo, args=(b, ready))
    p.start()
    ready.wait()
    msg = bytes(64)
    t = time.perf_counter()
    for _ in range(n):
        a.send_bytes(msg)
        a.recv_bytes()
    el = time.perf_counter() - t
    a.send_bytes(b"")  # Go's child stops at EOF; an empty message is simpler here
    p.join()
    return el / n * 1e9


def pool_map(n, chunksize):
    with mp.Pool(2) as pool:
        pool.apply(identity, (0,))  # workers are up before timing
        items = list(range(n))
        t = time.perf_counter()
        pool.map(identity, items, chunksize=chunksize)
        return n / (time.perf_counter() - t)


def pool_map_chunk1(n):
    """BenchmarkPoolMapChunk1: Pool(2).map of identity over n ints, one
    item per task."""
    return pool_map(n, 1)


def pool_map_default(n):
    """BenchmarkPoolMap: the same with the default chunk size (both use
    items / (4 x workers), rounded up)."""
    return pool_map(n, None)


def pool_apply_async(n):
    """BenchmarkPoolApplyAsync: n apply_async calls of identity on
    Pool(2), then every get."""
    with mp.Pool(2) as pool:
        pool.apply(identity, (0,))
        t = time.perf_counter()
        rs = [pool.apply_async(identity, (i,)) for i in range(n)]
        for r in rs:
            r.get()
        return n / (time.perf_counter() - t)


def dict_hammer(d, lock, n, ready, start, done):
    ready.set()
    start.wait()
    for _ in range(n):
        with lock:
            d["count"] = d["count"] + 1
    done.set()


def dict_update(n):
    """BenchmarkDictUpdate: this process and a child increment one key of
    a shared dict atomically, n updates between them; the time per update.
    A Manager dict has no atomic update, so each read-modify-write holds a
    multiprocessing.Lock: a semaphore in shared memory, where a Manager lock
    would add round trips to the server."""
    with mp.Manager() as m:
        d = m.dict({"count": 0})
        lock, ready, start, done = mp.Lock(), mp.Event(), mp.Event(), mp.Event()
        mine = n // 2
        p = mp.Process(target=dict_hammer, args=(d, lock, n - mine, ready, start, done))
        p.start()
        ready.wait()
        t = time.perf_counter()
        start.set()
        for _ in range(mine):
            with lock:
                d["count"] = d["count"] + 1
        done.wait()
        el = time.perf_counter() - t
        p.join()
        if d["count"] != n:
            raise RuntimeError("count %d after %d updates" % (d["count"], n))
        return el / n * 1e9


# key: (function, unit, size, quick size). Sizes make one measurement take
# about half a second here, a tenth of that with --quick.
WORKLOADS = {
    "process_start_fork": (process_start_fork, "ns/op", 200, 20),
    "process_start_spawn": (process_start_spawn, "ns/op", 12, 2),
    "lock_uncontended": (lock_uncontended, "ns/op", 5_000_000, 200_000),
    "lock_contended": (lock_contended, "ns/op", 1_000_000, 50_000),
    "queue_small": (queue_small, "msgs/s", 200_000, 20_000),
    "queue_4k": (queue_4k, "msgs/s", 100_000, 10_000),
    "pipe_rtt": (pipe_rtt, "ns/op", 10_000, 1_000),
    "pool_map_chunk1": (pool_map_chunk1, "tasks/s", 30_000, 3_000),
    "pool_map": (pool_map_default, "tasks/s", 2_000_000, 200_000),
    "pool_apply_async": (pool_apply_async, "tasks/s", 20_000, 2_000),
    "dict_update": (dict_update, "ns/op", 5_000, 500),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the work: a smoke run")
    ap.add_argument("--count", type=int, default=1, help="measurements per workload")
    ap.add_argument("--only", default="", help="comma-separated keys; default all")
    a = ap.parse_args()
    keys = [k for k in a.only.split(",") if k] or list(WORKLOADS)
    for k in keys:
        if k not in WORKLOADS:
            ap.error("unknown workload %r; known: %s" % (k, ", ".join(WORKLOADS)))
    print("python %s cpus %d start_method %s" % (
        sys.version.split()[0], os.cpu_count(), mp.get_start_method()), flush=True)
    for k in keys:
        fn, unit, size, quick = WORKLOADS[k]
        n = quick if a.quick else size
        fn(max(1, n // 10))  # untimed, as Go's first run of a benchmark with b.N = 1
        for _ in range(a.count):
            v = fn(n)
            print("%s %.6g %s" % (k, v, unit), flush=True)


if __name__ == "__main__":
    main()
