"""Bad input gets a clear answer and nothing is forwarded."""

import asyncio
import json

import pytest
import websockets
from conftest import CSMS, Gateway, PASSWORD, PKI, boot, connect_charger, start_csms_and_gateway, wait_for


def refused_status(exc_info):
    return exc_info.value.response.status_code


def test_wrong_password_is_refused_with_401(gateway, pki, csms_port):
    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            await connect_charger(gateway, password="not-the-password")
        assert refused_status(refused) == 401
        assert csms.charge_points == {}, "no north connection for a refused charger"
        csms.server.close()

    asyncio.run(scenario())
    assert "wrong password" in gateway.log()


def test_unknown_charger_is_refused(gateway, pki, csms_port):
    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            await connect_charger(gateway, charger_id="INTRUDER", password=PASSWORD)
        assert refused_status(refused) == 401
        assert csms.charge_points == {}
        csms.server.close()

    asyncio.run(scenario())
    assert "not in south.chargers" in gateway.log()


def test_malformed_json_from_either_side_gets_formation_violation_and_is_not_forwarded(gateway, pki, csms_port):
    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_charger(gateway)
        task.cancel()  # read the socket ourselves
        await connection.send('[2,"bad-1","Heartbeat",{"broken": }]')
        answer = json.loads(await asyncio.wait_for(connection.recv(), 5))
        assert answer[0] == 4 and answer[1] == "bad-1" and answer[2] == "FormationViolation"
        await connection.send('[2,"bad-2","Heartbeat"]')  # wrong arity
        answer = json.loads(await asyncio.wait_for(connection.recv(), 5))
        assert answer[:3] == [4, "bad-2", "ProtocolError"] or answer[:3] == [4, "bad-2", "FormationViolation"]

        await wait_for(lambda: "CP001" in csms.charge_points, what="north session")
        csms_connection = next(iter(csms.connections))
        csms_answers = []
        original = csms.charge_points["CP001"].route_message

        async def capture(raw):
            csms_answers.append(raw)
            await original(raw)

        csms.charge_points["CP001"].route_message = capture
        await csms_connection.send("[2, \"csms-bad\", \"Reset\", {\"type\": ")
        await wait_for(lambda: csms_answers, what="the CALLERROR at the CSMS")
        assert json.loads(csms_answers[0])[:3] == [4, "csms-bad", "FormationViolation"]
        # The charger never saw the broken frame.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(connection.recv(), 0.5)
        assert all("broken" not in frame for _, frame in csms.received)
        await connection.close()
        csms.server.close()

    asyncio.run(scenario())


def test_oversized_frame_is_refused(gateway, pki, csms_port):
    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_charger(gateway)
        task.cancel()
        huge = json.dumps([2, "huge", "DataTransfer", {"vendorId": "x", "data": "A" * 70_000}])
        await connection.send(huge)
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            await asyncio.wait_for(connection.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big
        await asyncio.sleep(0.2)
        assert all('"huge"' not in frame for _, frame in csms.received)
        csms.server.close()

    asyncio.run(scenario())


def test_untrusted_csms_certificate_means_no_connection_and_a_clear_log_line(tmp_path, csms_port):
    trusted = PKI(tmp_path / "trusted", ca_name="the CA the gateway trusts")
    impostor = PKI(tmp_path / "impostor", ca_name="some other CA")
    gateway = Gateway(tmp_path, trusted, csms_port)

    async def scenario():
        csms = CSMS(impostor, csms_port)
        await csms.start()
        gateway.start()
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            await connect_charger(gateway)
        assert refused.value.response.status_code == 502
        assert csms.charge_points == {}
        csms.server.close()

    try:
        asyncio.run(scenario())
        log = gateway.log()
        assert "north connection failed" in log
        assert "not trusted by the configured CA" in log
    finally:
        gateway.stop()


def test_csms_killed_mid_session_disconnects_the_charger_then_serves_it_again(gateway, pki, csms_port):
    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_charger(gateway)
        await boot(charger)

        await csms.kill()
        # Mirror mode: the charger loses its link so its own offline queue takes over.
        await asyncio.wait_for(connection.wait_closed(), 10)
        task.cancel()

        # While the CSMS is away the gateway refuses the charger with 502.
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            await connect_charger(gateway)
        assert refused.value.response.status_code == 502

        revived = CSMS(pki, csms_port)
        await revived.start()
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            try:
                charger, connection, task = await connect_charger(gateway)
                break
            except websockets.exceptions.InvalidStatus as error:
                assert error.response.status_code == 502
                assert asyncio.get_running_loop().time() < deadline, "charger never served again"
                await asyncio.sleep(0.2)
        boot_answer = await boot(charger)
        assert boot_answer.status == "Accepted"
        assert len(revived.frames_from("CP001")) == 1
        await connection.close()
        task.cancel()
        revived.server.close()

    asyncio.run(scenario())
    assert "CSMS link closed; closing the charger link" in gateway.log()
