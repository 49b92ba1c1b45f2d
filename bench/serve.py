"""Load on a served monitor: `python -m bench.serve [--seconds 30] [--clients 20] [--rate 120]`.

A child process records a stream (dense features, `--d-sae` wide, `--batch` tokens a forward,
history on) and serves it (`monitor.serve()`); this process connects `--clients` WebSocket
clients (each subscribed to snapshots) and sends `--rate` HTTP requests a second for
`--seconds` across the read routes (state, history, statistics, top features, snapshot).
Reported: errors, HTTP latency p50/p99, requests/s reached, the child's RSS after warm-up (a
tenth of the run) and at the end, whether every client got the final state, and the forward
loop's median time while one more client with large snapshots never reads (stalled) against
the same client reading, in alternating phases of one run (the ratio; 1.00 = no effect).
Between forwards the child sleeps `--gap` seconds, standing for the model's own work: the
monitor's lock is free then.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

from .cases import machine

PREFIX = "/api/monitoring"
MAX_IN_FLIGHT = 64
ROUTES = [("GET", PREFIX, None), ("GET", PREFIX + "/history", None),
          ("GET", PREFIX + "/statistics?features=1,2,3", None),
          ("POST", PREFIX + "/statistics/top", {"k": 10}),
          ("GET", PREFIX + "/snapshot?table_rows=20", None)]


# ---- the serving process ---------------------------------------------------------------------

def child(d_sae: int, batch: int, gap_s: float) -> None:
    """Record and serve until stdin says `stop`; `mark NAME` starts a timing phase."""
    import threading

    import torch

    from featmon_widget import FeatureMonitor

    from .soak import rss_bytes

    # One compute thread: OpenMP workers spinning while the OS runs other processes would be
    # counted as the forward's time and swamp the effect measured.
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    pool = [torch.relu(torch.randn(batch, d_sae, generator=gen) - 1.5) for _ in range(8)]
    monitor = FeatureMonitor(d_sae, throttle_ms=100, history_size=1000)
    server = monitor.serve(quiet=True)
    print(json.dumps({"url": server.url, "token": server.token}), flush=True)
    # Per phase: each forward's wall time and its thread's CPU time (which a busy machine
    # disturbs less: waiting is not counted, work is).
    phases: list[tuple[str, list[float], list[float]]] = [("warmup", [], [])]
    stop = threading.Event()

    def commands() -> None:
        for line in sys.stdin:
            word, _, arg = line.strip().partition(" ")
            if word == "mark":
                phases.append((arg, [], []))
            elif word == "rss":
                print(json.dumps({"rss": rss_bytes()}), flush=True)
            elif word == "stop":
                break
        stop.set()

    threading.Thread(target=commands, daemon=True).start()
    step = 0
    while not stop.is_set():
        start, cpu = time.perf_counter(), time.thread_time()
        monitor.on_activation(pool[step % len(pool)])
        phases[-1][1].append(time.perf_counter() - start)
        phases[-1][2].append(time.thread_time() - cpu)
        step += 1
        time.sleep(gap_s)  # the model's own work between two monitored layers
    final = monitor.state.total_tokens
    print(json.dumps({"final_tokens": final, "dropped": server.hub.dropped,
                      "phases": [(name, statistics.median(t) if t else None,
                                  statistics.median(c) if c else None, len(t))
                                 for name, t, c in phases]}), flush=True)
    time.sleep(3)  # let the trailing edge reach the clients before closing
    server.close()
    monitor.close()


# ---- the clients -----------------------------------------------------------------------------

async def _ws_client(url: str, token: str, last: dict[int, int], i: int,
                     stop: asyncio.Event, errors: list[str]) -> None:
    from websockets.asyncio.client import connect

    try:
        async with connect(url.replace("http", "ws") + f"/api/monitoring/ws?token={token}",
                           max_size=1 << 22) as ws:
            await ws.send(json.dumps({"type": "subscribe", "table_rows": 20, "records": 5}))
            while not stop.is_set():
                try:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 1.0))
                except asyncio.TimeoutError:
                    continue
                if message["event"] == "snapshot":
                    last[i] = message["snapshot"]["state"]["total_tokens"]
    except Exception as exc:  # counted as an error
        errors.append(f"ws {i}: {type(exc).__name__}: {exc}")


async def _http_load(url: str, token: str, rate: float, seconds: float,
                     latencies: list[float], errors: list[str], skipped: list[int]) -> float:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"},
                                 limits=httpx.Limits(max_connections=16)) as client:
        async def one(n: int) -> None:
            method, path, body = ROUTES[n % len(ROUTES)]
            start = time.perf_counter()
            try:
                response = await client.request(method, path, json=body)
                if response.status_code != 200:
                    errors.append(f"{path}: {response.status_code}")
            except Exception as exc:
                errors.append(f"{path}: {type(exc).__name__}")
            latencies.append(time.perf_counter() - start)

        # Open loop at `rate`, but a request due while `MAX_IN_FLIGHT` are waiting is not sent
        # (counted in `skipped`): past that the server is saturated, and the rate says so.
        tasks: set[asyncio.Task] = set()
        start, n = time.perf_counter(), 0
        while (now := time.perf_counter()) - start < seconds:
            while n < int((now - start) * rate):
                n += 1
                if len(tasks) >= MAX_IN_FLIGHT:
                    skipped.append(n)
                    continue
                task = asyncio.create_task(one(n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - start
        await asyncio.gather(*tasks)
        return len(latencies) / elapsed


def _ask(proc: subprocess.Popen, line: str) -> dict | None:
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline()) if line == "rss" else None


async def run(args: argparse.Namespace) -> dict:
    proc = subprocess.Popen([sys.executable, "-m", "bench.serve", "--child",
                             "--d-sae", str(args.d_sae), "--batch", str(args.batch),
                             "--gap", str(args.gap)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    info = json.loads(proc.stdout.readline())
    url, token = info["url"], info["token"]
    stop, last, errors, latencies, skipped = asyncio.Event(), {}, [], [], []
    clients = [asyncio.create_task(_ws_client(url, token, last, i, stop, errors))
               for i in range(args.clients)]
    load = asyncio.create_task(_http_load(url, token, args.rate, args.seconds, latencies,
                                          errors, skipped))
    await asyncio.sleep(args.seconds / 10)
    rss_warm = _ask(proc, "rss")["rss"]
    achieved = await load
    rss_end = _ask(proc, "rss")["rss"]
    # The extra client: large snapshots (200 rows, 50 records) on a socket with a small
    # receive buffer. In a "reading" phase it reads everything; in a "stalled" phase it never
    # reads (websockets stops reading the socket once its one-message queue is full), so the
    # server's sends back up. Same options in both: the difference is the stall alone.
    # The phases alternate in the same run.
    import socket

    from websockets.asyncio.client import connect

    host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
    for phase in ("reading", "stalled") * args.pairs:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.connect((host, int(port)))
        extra = await connect(url.replace("http", "ws") + f"/api/monitoring/ws?token={token}",
                              max_queue=1, sock=sock, max_size=1 << 22)
        await extra.send(json.dumps({"type": "subscribe", "table_rows": 200, "records": 50}))
        reader = None
        if phase == "reading":
            async def drain(ws=extra) -> None:
                async for _ in ws:
                    pass
            reader = asyncio.create_task(drain())
        await asyncio.sleep(1.0)  # settle: the subscription's first builds
        _ask(proc, f"mark {phase}")
        await asyncio.sleep(args.phase_seconds)
        _ask(proc, "mark between")
        if reader is not None:
            reader.cancel()
        extra.transport.abort()
    _ask(proc, "stop")
    result = json.loads(proc.stdout.readline())
    final = result["final_tokens"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sum(v == final for v in last.values()) < args.clients:
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*clients)
    proc.wait(30)
    wall: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    for name, median, cpu_median, _n in result["phases"]:
        wall.setdefault(name, []).append(median)
        cpu.setdefault(name, []).append(cpu_median)

    def ratio(medians: dict[str, list[float]]) -> tuple[float, list[float]]:
        pairs = [round(b / a, 3) for a, b in zip(medians["reading"], medians["stalled"],
                                                 strict=True)]
        return round(statistics.median(medians["stalled"]) /
                     statistics.median(medians["reading"]), 3), pairs

    latencies.sort()
    return {
        "machine": machine(), "seconds": args.seconds, "ws_clients": args.clients,
        "http_requests": len(latencies), "http_rate": round(achieved, 1),
        "http_skipped_saturated": len(skipped),
        "errors": len(errors), "first_errors": errors[:5],
        "p50_ms": round(latencies[len(latencies) // 2] * 1e3, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1e3, 2),
        "rss_warm_mb": round(rss_warm / 2**20, 1), "rss_end_mb": round(rss_end / 2**20, 1),
        "rss_growth_pct": round(100 * (rss_end - rss_warm) / rss_warm, 2),
        "clients_with_final_state": sum(v == final for v in last.values()),
        "forward_ms_reading_client": round(statistics.median(wall["reading"]) * 1e3, 3),
        "forward_ms_stalled_client": round(statistics.median(wall["stalled"]) * 1e3, 3),
        "stalled_ratio": ratio(wall)[0], "stalled_ratio_per_pair": ratio(wall)[1],
        "stalled_ratio_cpu": ratio(cpu)[0], "stalled_ratio_cpu_per_pair": ratio(cpu)[1],
        "clients_dropped": result["dropped"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rate", type=float, default=120, help="HTTP requests per second")
    parser.add_argument("--phase-seconds", type=float, default=3)
    parser.add_argument("--pairs", type=int, default=6, help="reading/stalled phase pairs")
    parser.add_argument("--d-sae", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=128, help="tokens a forward")
    parser.add_argument("--gap", type=float, default=0.02,
                        help="seconds of other work between forwards (the model's)")
    args = parser.parse_args()
    if args.child:
        child(args.d_sae, args.batch, args.gap)
        return
    print(json.dumps(asyncio.run(run(args)), indent=1))


if __name__ == "__main__":
    os.environ.setdefault("FEATMON_COMPILE", "0")
    main()
