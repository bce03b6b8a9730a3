"""WebSocket pings keep dead chargers from holding a session (and its north link) forever."""

import asyncio
import base64
import os
import socket
import time

from conftest import PASSWORD, connect_charger, hang_up, start_csms_and_gateway, wait_for
from ocpp.v16 import call


def with_south_pings(gateway, seconds):
    text = gateway.config.read_text().replace('  path: "/ocpp"\n', f'  path: "/ocpp"\n  ping_interval: {seconds}\n')
    gateway.config.write_text(text)


def raw_handshake(port, charger_id="CP001"):
    """A charger that completes the upgrade and then never reads again (a hung MCU)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    auth = base64.b64encode(f"{charger_id}:{PASSWORD}".encode()).decode()
    sock.sendall(
        (
            f"GET /ocpp/{charger_id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6\r\n"
            f"Authorization: Basic {auth}\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(4096)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock, response.split(b"\r\n\r\n", 1)[1]


def test_a_charger_that_stops_answering_pings_is_disconnected(gateway, pki, csms_port):
    with_south_pings(gateway, 0.3)

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        sock, _ = await asyncio.to_thread(raw_handshake, gateway.south_port)
        await wait_for(lambda: "CP001" in csms.charge_points, what="the north link")
        # Never answer: after a missed pong the gateway closes the charger and, in mirror mode, the CSMS link.
        await wait_for(lambda: not csms.connections, timeout=5, what="the north link to close")
        sock.settimeout(5)
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        sock.close()
        assert received and received[0] & 0x0F == 0x9, "the gateway pinged first"
        csms.server.close()

    asyncio.run(scenario())
    assert "no pong within" in gateway.log()


def test_a_charger_that_answers_pings_stays_connected(gateway, pki, csms_port):
    with_south_pings(gateway, 0.2)

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_charger(gateway, ping_interval=None)
        started = time.time()
        await asyncio.sleep(1.2)  # six ping intervals, answered by the websockets library
        heartbeat = await charger.call(call.Heartbeat())
        assert heartbeat.current_time and time.time() - started >= 1.2
        assert len(csms.connections) == 1
        await hang_up(csms, (connection, task))

    asyncio.run(scenario())
