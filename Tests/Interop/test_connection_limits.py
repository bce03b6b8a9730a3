"""Connection-level limits of the real binary: idle and slowloris sockets, a stalled north handshake."""

import asyncio
import os
import resource
import signal
import socket
import time
import urllib.request

from conftest import PASSWORD, boot, connect_charger, hang_up, run_with, start_csms_and_gateway, wait_for


def with_south(gateway, lines):
    text = gateway.config.read_text().replace('  path: "/ocpp"\n', '  path: "/ocpp"\n' + lines)
    gateway.config.write_text(text)


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def idle_socket(source):
    sock = socket.socket()
    sock.bind((source, 0))
    sock.setblocking(False)
    return sock


def test_idle_and_slowloris_sockets_do_not_starve_a_charger(gateway, pki, csms_port):
    """1,000 idle TCP connections and 50 slowloris ones from one address, RLIMIT_NOFILE=1024: a charger
    from another address still boots, /healthz answers, and the descriptors come back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    with_south(gateway, "  handshake_timeout: 2\n")
    sockets = []

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        pid = gateway.process.pid
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (1024, 1024))
        baseline = open_fds(pid)
        for _ in range(1000):
            sock = idle_socket("127.0.0.2")
            try:
                sock.connect(("127.0.0.1", gateway.south_port))
            except BlockingIOError:
                pass
            sockets.append(sock)
        slow = []
        for _ in range(50):
            sock = idle_socket("127.0.0.3")
            try:
                sock.connect(("127.0.0.1", gateway.south_port))
            except BlockingIOError:
                pass
            slow.append(sock)
        sockets.extend(slow)

        async def trickle():
            request = b"GET /ocpp/CP001 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            for index in range(4):
                for sock in slow:
                    try:
                        sock.send(request[index : index + 1])
                    except OSError:
                        pass
                await asyncio.sleep(1)

        trickling = asyncio.create_task(trickle())
        await asyncio.sleep(0.3)
        # While they are held: a charger from another address boots, and /healthz answers.
        started = time.monotonic()
        charger, connection, task = await connect_charger(gateway)
        response = await boot(charger)
        assert response.status == "Accepted"
        with urllib.request.urlopen(f"http://127.0.0.1:{gateway.admin_port}/healthz", timeout=5) as health:
            assert health.status == 200
        assert time.monotonic() - started < 5
        held = open_fds(pid)
        assert held <= baseline + 8 + 8 + 2 + 10, f"{held} descriptors held (baseline {baseline})"
        # After the handshake timeout the idle and slowloris sockets are gone too.
        await wait_for(lambda: open_fds(pid) <= baseline + 4, timeout=8, what="descriptors back to baseline")
        await trickling
        metrics = gateway.metrics()
        assert 'ocpp_gateway_south_connection_limits_total{reason="too_many_from_source"}' in metrics
        assert 'ocpp_gateway_south_connection_limits_total{reason="handshake_timeout"}' in metrics
        await hang_up(csms, (connection, task))

    try:
        run_with(gateway, scenario)
    finally:
        for sock in sockets:
            sock.close()
    log = gateway.log()
    assert log.count("south connection closed before its upgrade") <= 40, "refusal lines are throttled"


def test_sigterm_during_a_stalled_north_handshake_exits_cleanly(gateway, pki, csms_port):
    """A CSMS that accepts TCP and never answers TLS; SIGTERM while the charger's north attempt is
    pending: the attempt is cancelled before the event loops stop (no 'Cannot schedule tasks')."""
    stall = socket.socket()
    stall.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    stall.bind(("127.0.0.1", csms_port))
    stall.listen(16)
    stall.setblocking(False)
    accepted = []

    async def scenario():
        gateway.start()
        attempt = asyncio.create_task(connect_charger(gateway))

        def accept():
            try:
                accepted.append(stall.accept()[0])
            except BlockingIOError:
                pass
            return bool(accepted)

        await wait_for(accept, timeout=5, what="the north attempt")
        gateway.signal(signal.SIGTERM)
        await wait_for(lambda: gateway.process.poll() is not None, timeout=10, what="the gateway to exit")
        attempt.cancel()
        try:
            await attempt
        except BaseException:
            pass

    try:
        run_with(gateway, scenario)
    finally:
        for sock in accepted:
            sock.close()
        stall.close()
    assert gateway.process.returncode == 0
    log = gateway.log()
    assert "Cannot schedule tasks" not in log
    assert "cancelling pending north connections" in log
