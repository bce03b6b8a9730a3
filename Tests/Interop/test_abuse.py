"""Abuse against the shipped default pipeline (firewall first): floods, idle and slow connections, invented actions,
a non-reading peer — while a legitimate charger keeps being served.

In `make test` (debug build) it asserts what must hold whatever the speed: every legitimate Authorize is answered
(none waits seconds), descriptors return to baseline, memory and metric series stay bounded. `make bench` runs it
against the release build (`ABUSE_BENCH=1`) and records the latency target — p99 under abuse ≤ 2 × idle + 1 ms — with
✓/✗ in bench/results/abuse.json; speed targets are not asserted in tests. The gateway is pinned to one core; the
attackers run on the other under SCHED_IDLE (`chrt --idle`): on a real site they are other machines, so they take
every cycle the legitimate charger and CSMS of this test leave free, but never delay those two. The figures then
measure the gateway, not a load generator that starves its own client."""

import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import PASSWORD, Gateway, boot, connect_charger, hang_up, run_with, start_csms_and_gateway, wait_for
from ocpp.v16 import call

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "abuse.json"
BENCH = os.environ.get("ABUSE_BENCH") == "1"
# ABUSE_BUDGET=0: the same with the per-connection message budget off (`south.max_messages_per_second: 0`),
# so the flood gets in at full rate: the worst case, and what the budget buys (`make bench` runs both).
BUDGET = os.environ.get("ABUSE_BUDGET") != "0"
if not BUDGET:
    RESULTS = RESULTS.with_name("abuse-no-budget.json")

# Each attacker runs in its own process, so the legitimate client's measurements are not slowed by our own Python.
ATTACKER = textwrap.dedent(
    r'''
    import asyncio, base64, json, socket, sys, time, websockets
    kind, port, charger, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    # Floods come from 127.0.0.2, idle connections from .3, slowloris from .4: each source meets its own caps.
    source = {"idle": "127.0.0.3", "slowloris": "127.0.0.4"}.get(kind, "127.0.0.2")
    auth = {"Authorization": "Basic " + base64.b64encode(f"{charger}:{sys.argv[5]}".encode()).decode()}

    async def connect():
        return await websockets.connect(f"ws://127.0.0.1:{port}/ocpp/{charger}", subprotocols=["ocpp1.6"],
                                        additional_headers=auth, open_timeout=10, max_queue=None,
                                        ping_interval=None, local_addr=(source, 0))

    async def flood(unique_actions=False, malformed=False, read=True):
        ws = await connect()
        sent = 0
        async def drain():
            try:
                async for _ in ws:
                    pass
            except Exception:
                pass
        reader = asyncio.create_task(drain()) if read else None
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                for _ in range(200):
                    if malformed:
                        frame = '[2,"m%d","Heartbeat",{' % sent
                    elif unique_actions:
                        frame = json.dumps([2, f"a{sent}", f"Invented{sent % 2000}", {}])
                    else:
                        frame = json.dumps([2, f"f{sent}", "Authorize", {"idTag": "FLOOD"}])
                    await ws.send(frame)
                    sent += 1
                await asyncio.sleep(0)
        except Exception:
            pass
        print(json.dumps({"kind": kind, "sent": sent, "rate": sent / seconds}), flush=True)
        if reader:
            reader.cancel()

    def idle(count):
        held = []
        for _ in range(count):
            s = socket.socket()
            s.bind((source, 0))
            try:
                s.connect(("127.0.0.1", port))
                held.append(s)
            except OSError:
                s.close()
        time.sleep(seconds)
        print(json.dumps({"kind": kind, "opened": len(held)}), flush=True)

    async def slowloris(count):
        request = f"GET /ocpp/{charger} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        writers = []
        for _ in range(count):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
                writers.append(writer)
            except OSError:
                pass
        deadline = time.monotonic() + seconds
        index = 0
        while time.monotonic() < deadline:
            for writer in writers:
                try:
                    writer.write(request[index % len(request)].encode())
                except Exception:
                    pass
            index += 1
            await asyncio.sleep(1)
        print(json.dumps({"kind": kind, "opened": len(writers)}), flush=True)

    if kind == "flood":
        asyncio.run(flood())
    elif kind == "nonreader":
        asyncio.run(flood(malformed=True, read=False))
    elif kind == "invented":
        asyncio.run(flood(unique_actions=True))
    elif kind == "idle":
        idle(1000)
    elif kind == "slowloris":
        asyncio.run(slowloris(50))
    '''
)


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def p99(samples):
    ordered = sorted(samples)
    return ordered[max(0, int(len(ordered) * 0.99) - 1)]


async def authorize_latencies(charger, count):
    """Sequential Authorizes at 8/s: a busy but honest charger, inside the default firewall's 10/s bucket."""
    samples = []
    for _ in range(count):
        await asyncio.sleep(0.125)
        started = time.perf_counter()
        answer = await charger.call(call.Authorize(id_tag="04A2B3C4"))
        samples.append(time.perf_counter() - started)
        assert answer.id_tag_info["status"] == "Accepted"
    return samples


def test_a_legitimate_charger_is_served_through_abuse(tmp_path, pki, csms_port):
    attackers = ("ATTACK1", "ATTACK2", "ATTACK3")
    pipeline = (ROOT / "pipelines" / "default.yaml").read_text()
    gateway = Gateway(tmp_path, pki, csms_port, chargers=("CP001",) + attackers, pipeline=pipeline)
    if not BUDGET:
        gateway.config.write_text(gateway.config.read_text().replace("  security_profile: 1\n",
                                                                     "  security_profile: 1\n  max_messages_per_second: 0\n", 1))
    script = tmp_path / "attacker.py"
    script.write_text(ATTACKER)
    figures = {}

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        pid = gateway.process.pid
        cores = sorted(os.sched_getaffinity(0))
        attacker_cores = set(cores[1:]) or set(cores)
        if len(cores) >= 2:
            for thread in os.listdir(f"/proc/{pid}/task"):
                os.sched_setaffinity(int(thread), {cores[0]})
            os.sched_setaffinity(0, attacker_cores)
        # The limit under which 1,000 idle connections used to starve everyone.
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (1024, 1024))
        charger, connection, task = await connect_charger(gateway)
        await boot(charger)
        await authorize_latencies(charger, 20)  # warm up
        idle = await authorize_latencies(charger, 100)
        baseline_fds, baseline_rss = fd_count(pid), rss_kib(pid)

        seconds = 18
        procs = [
            subprocess.Popen(["chrt", "--idle", "0", sys.executable, str(script), kind, str(gateway.south_port), who, str(seconds),
                              PASSWORD], stdout=subprocess.PIPE, text=True)
            for kind, who in (("flood", "ATTACK1"), ("nonreader", "ATTACK2"), ("invented", "ATTACK3"),
                              ("idle", "none"), ("slowloris", "ATTACK1"))
        ]
        await asyncio.sleep(2)
        peak_rss = rss_kib(pid)
        loaded = await authorize_latencies(charger, 100)
        peak_rss = max(peak_rss, rss_kib(pid))
        peak_fds = fd_count(pid)
        reports = []
        for proc in procs:
            out, _ = proc.communicate(timeout=seconds + 30)
            reports += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        peak_rss = max(peak_rss, rss_kib(pid))
        # Every attacker is gone: the gateway's descriptors come back to where they were.
        await wait_for(lambda: fd_count(pid) <= baseline_fds + 2, timeout=20, what="descriptors back to baseline")
        after = await authorize_latencies(charger, 10)

        metrics = gateway.metrics()
        series = [line for line in metrics.splitlines() if line.startswith("ocpp_gateway_frames_total{")]
        target = 2 * p99(idle) + 0.001
        figures.update({
            "build": "release" if BENCH else "debug", "message_budget": "100/s, burst 200" if BUDGET else "off",
            "target_p99_ms": round(target * 1000, 3),
            "p99_target_met": p99(loaded) <= target,
            "authorize_p99_idle_ms": round(p99(idle) * 1000, 3),
            "authorize_p99_under_abuse_ms": round(p99(loaded) * 1000, 3),
            "authorize_median_idle_ms": round(statistics.median(idle) * 1000, 3),
            "authorize_median_under_abuse_ms": round(statistics.median(loaded) * 1000, 3),
            "authorize_slowest_under_abuse_ms": [round(x * 1000, 1) for x in sorted(loaded)[-5:]],
            "rss_growth_mib": round((peak_rss - baseline_rss) / 1024, 1),
            "fds_baseline": baseline_fds, "fds_peak": peak_fds, "fds_after": fd_count(pid),
            "frames_total_series": len(series),
            "attackers": reports,
        })
        if BENCH:
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(figures, indent=2) + "\n")

        flood = next((r for r in reports if r["kind"] == "flood"), {"rate": 0})
        if BENCH and not BUDGET:
            # With the budget (the default) the gateway reads each attacker at 100 messages/s and the rest of
            # the flood waits in the attacker's own TCP buffers, so its send rate falls; without it the flood
            # must reach 10k frames/s to mean anything.
            assert flood["rate"] >= 10_000, f"the flood must reach 10k frames/s to mean anything: {figures}"
        # Served throughout: every Authorize answered well within a charger's CALL timeout (10–30 s), however
        # slow a debug build on a shared 2-core machine is; the latency target itself is measured by `make bench`.
        assert max(loaded) < 5.0, figures
        assert figures["rss_growth_mib"] < 64, figures
        assert len(series) < 200, f"invented actions must not create series: {len(series)}"
        assert after and p99(after) < 1
        await hang_up(csms, (connection, task))

    run_with(gateway, scenario, lambda: print(json.dumps(figures, indent=2)))
