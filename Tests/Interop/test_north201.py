"""A legacy 1.6J charger as an OCPP 2.0.1 charging station (`north.ocpp_version: "2.0.1"`).

Two independent peers from the `ocpp` package: its 2.0.1 CSMS role (it validates every payload it receives
against the OCA 2.0.1 schemas) over mutual TLS, and its 1.6 charger role over ws:// + Basic auth. The 1.6
charger never sees a 2.0.1 frame; the CSMS never sees a 1.6 frame."""

import asyncio
import datetime
import json
import signal

from conftest import CSMS201, Gateway, connect_charger, now_iso, wait_for
from field_peers import W_ONLY, FieldFirmware
from ocpp.routing import on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action, RemoteStartStopStatus
from ocpp.v201 import call as call201

V201 = '  ocpp_version: "2.0.1"\n'
SIGNED = 'OCMF|{"FV":"1.0","GI":"LC-22","RD":[{"TM":"2026-01-01T10:05:00,000+0000 S","RV":1.234,"RI":"1-b:1.8.0","RU":"kWh"}]}|{"SA":"ECDSA-secp256r1-SHA256","SD":"3045022100"}'


def events(csms, transaction_id=None):
    return [e for e in csms.transaction_events if transaction_id is None or e["transaction_info"]["transaction_id"] == transaction_id]


def frames_to_csms(csms, charger_id="CP001"):
    return [json.loads(raw) for raw in csms.frames_from(charger_id)]


def assert_all_201(csms, charger):
    """The CSMS only ever got 2.0.1 CALLs; the charger only ever got 1.6 CALLs."""
    for frame in frames_to_csms(csms):
        if frame[0] == 2:
            assert frame[2] not in ("StartTransaction", "StopTransaction", "DiagnosticsStatusNotification"), frame
    for raw in charger.received:
        frame = json.loads(raw)
        if frame[0] == 2:
            assert frame[2] not in ("RequestStartTransaction", "RequestStopTransaction", "TransactionEvent", "GetVariables"), frame


async def start(tmp_path, pki, csms_port, pipeline=None, north_extra=""):
    gateway = Gateway(tmp_path, pki, csms_port, pipeline=pipeline, north_extra=V201 + north_extra)
    csms = CSMS201(pki, csms_port)
    await csms.start()
    gateway.start()
    return gateway, csms


async def boot(charger):
    return await charger.call(call.BootNotification(charge_point_model="LC-22", charge_point_vendor="LegacyCo",
                                                    charge_point_serial_number="SN-1", firmware_version="4.2"))


async def start_transaction(charger, id_tag="TAG1", meter_start=1000):
    return await charger.call(call.StartTransaction(connector_id=1, id_tag=id_tag, meter_start=meter_start, timestamp=now_iso()))


async def meter_values(charger, transaction_id, wh, signed=False):
    samples = [{"value": str(wh), "measurand": "Energy.Active.Import.Register", "unit": "Wh", "context": "Sample.Periodic",
                "location": "Outlet"}]
    if signed:
        samples.append({"value": SIGNED, "format": "SignedData", "measurand": "Energy.Active.Import.Register", "unit": "Wh",
                        "context": "Sample.Periodic", "location": "Outlet"})
    return await charger.call(call.MeterValues(connector_id=1, transaction_id=transaction_id,
                                               meter_value=[{"timestamp": now_iso(), "sampled_value": samples}]))


def test_boot_authorize_and_a_full_transaction(tmp_path, pki, csms_port):
    async def scenario():
        gateway, csms = await start(tmp_path, pki, csms_port)
        try:
            charger, connection, task = await connect_charger(gateway)
            answer = await boot(charger)
            assert answer.status == "Accepted" and answer.interval == 300
            assert csms.subprotocols == ["ocpp2.0.1"]
            boot201 = [f for f in frames_to_csms(csms) if f[0] == 2 and f[2] == "BootNotification"][0][3]
            assert boot201 == {"chargingStation": {"model": "LC-22", "vendorName": "LegacyCo", "serialNumber": "SN-1",
                                                   "firmwareVersion": "4.2"}, "reason": "PowerUp"}
            auth = await charger.call(call.Authorize(id_tag="TAG1"))
            assert auth.id_tag_info["status"] == "Accepted"
            await charger.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Preparing"))
            started = await start_transaction(charger)
            local = started.transaction_id
            assert isinstance(local, int) and started.id_tag_info["status"] == "Accepted"
            await charger.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Charging"))
            await meter_values(charger, local, 1500, signed=True)
            await meter_values(charger, local, 2500)
            await charger.call(call.StopTransaction(transaction_id=local, meter_stop=3000, timestamp=now_iso(), reason="Local",
                                                    id_tag="TAG1"))
            await wait_for(lambda: any(e["event_type"] == "Ended" for e in csms.transaction_events), what="Ended")
            tx = events(csms)
            transaction_id = tx[0]["transaction_info"]["transaction_id"]
            assert [e["event_type"] for e in tx] == ["Started", "Updated", "Updated", "Updated", "Ended"]
            assert all(e["transaction_info"]["transaction_id"] == transaction_id for e in tx)
            assert [e["seq_no"] for e in tx] == sorted({e["seq_no"] for e in tx}), "seqNo strictly increasing"
            assert tx[0]["seq_no"] == 0 and tx[0]["id_token"] == {"id_token": "TAG1", "type": "ISO14443"}
            assert tx[1]["trigger_reason"] == "ChargingStateChanged" and tx[1]["transaction_info"]["charging_state"] == "Charging"
            signed = [s for s in tx[2]["meter_value"][0]["sampled_value"] if "signed_meter_value" in s]
            assert signed[0]["signed_meter_value"]["signed_meter_data"] == SIGNED, "signed meter values pass unchanged"
            assert tx[4]["transaction_info"]["stopped_reason"] == "Local" and not tx[4].get("offline")
            status = [f[3] for f in frames_to_csms(csms) if f[0] == 2 and f[2] == "StatusNotification"]
            assert status[0] == {"timestamp": status[0]["timestamp"], "connectorStatus": "Occupied", "evseId": 1, "connectorId": 1}
            assert_all_201(csms, charger)
            await connection.close()
            task.cancel()
        finally:
            gateway.stop()
            csms.server.close()

    asyncio.run(scenario())


def test_remote_start_and_stop(tmp_path, pki, csms_port):
    async def scenario():
        gateway, csms = await start(tmp_path, pki, csms_port)
        try:
            charger, connection, task = await connect_charger(gateway)
            remote_stops = []

            async def on_remote_stop(transaction_id, **_):
                remote_stops.append(transaction_id)
                return call_result.RemoteStopTransaction(status=RemoteStartStopStatus.accepted)

            charger.route_map[Action.remote_stop_transaction] = {"_on_action": on_remote_stop, "_skip_schema_validation": False}
            await boot(charger)
            cp = csms.charge_points["CP001"]
            answer = await cp.call(call201.RequestStartTransaction(id_token={"id_token": "APP-7", "type": "Central"},
                                                                   remote_start_id=77, evse_id=1))
            assert answer.status == "Accepted"
            remote = [json.loads(r) for r in charger.received if json.loads(r)[0] == 2]
            assert remote[-1][2] == "RemoteStartTransaction" and remote[-1][3] == {"connectorId": 1, "idTag": "APP-7"}
            started = await start_transaction(charger, id_tag="APP-7")
            await wait_for(lambda: len(csms.transaction_events) == 1, what="Started")
            first = csms.transaction_events[0]
            assert first["trigger_reason"] == "RemoteStart" and first["transaction_info"]["remote_start_id"] == 77
            assert first["id_token"] == {"id_token": "APP-7", "type": "Central"}
            stop = await cp.call(call201.RequestStopTransaction(transaction_id=first["transaction_info"]["transaction_id"]))
            assert stop.status == "Accepted" and remote_stops == [started.transaction_id]
            status = await cp.call(call201.GetTransactionStatus(transaction_id=first["transaction_info"]["transaction_id"]))
            assert status.ongoing_indicator is True and status.messages_in_queue is False
            await charger.call(call.StopTransaction(transaction_id=started.transaction_id, meter_stop=2000, timestamp=now_iso(),
                                                    reason="Remote"))
            await wait_for(lambda: len(csms.transaction_events) == 2, what="Ended")
            ended = csms.transaction_events[1]
            assert ended["trigger_reason"] == "RemoteStop" and ended["transaction_info"]["stopped_reason"] == "Remote"
            assert_all_201(csms, charger)
            await connection.close()
            task.cancel()
        finally:
            gateway.stop()
            csms.server.close()

    asyncio.run(scenario())


def test_set_charging_profile_201_is_compiled_for_a_w_only_charger(tmp_path, pki, csms_port):
    pipeline = "version: 1\nstages:\n  - id: identity\n    type: auth\n  - id: smart\n    type: smart_charging\n"

    async def scenario():
        gateway, csms = await start(tmp_path, pki, csms_port, pipeline=pipeline)
        try:
            charger, connection, task = await connect_charger(gateway)
            firmware = FieldFirmware(charger, W_ONLY)
            await boot(charger)
            await asyncio.sleep(0.3)  # the gateway reads the charger's limits after boot
            begin = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
            profile = {
                "id": 17, "stack_level": 3, "charging_profile_purpose": "TxDefaultProfile", "charging_profile_kind": "Absolute",
                "charging_schedule": [{"id": 1, "start_schedule": begin, "charging_rate_unit": "A",
                                       "charging_schedule_period": [{"start_period": i * 1800, "limit": 16 - (i % 4), "number_phases": 3}
                                                                    for i in range(48)]}],
            }
            answer = await csms.charge_points["CP001"].call(call201.SetChargingProfile(evse_id=1, charging_profile=profile))
            assert answer.status == "Accepted", firmware.refused
            compiled = firmware.profiles[-1]
            assert compiled["charging_schedule"]["charging_rate_unit"] == "W"
            assert len(compiled["charging_schedule"]["charging_schedule_period"]) <= W_ONLY.max_periods
            assert not any(json.loads(r)[2] == "DataTransfer" for r in charger.received if json.loads(r)[0] == 2)
            composite = await csms.charge_points["CP001"].call(call201.GetCompositeSchedule(duration=3600, evse_id=1,
                                                                                            charging_rate_unit="W"))
            assert composite.status == "Accepted" and composite.schedule["evse_id"] == 1
            cleared = await csms.charge_points["CP001"].call(call201.ClearChargingProfile(charging_profile_id=17))
            assert cleared.status in ("Accepted", "Unknown")
            await connection.close()
            task.cancel()
        finally:
            gateway.stop()
            csms.server.close()

    asyncio.run(scenario())


def test_get_and_set_variables_and_the_base_report(tmp_path, pki, csms_port):
    async def scenario():
        gateway, csms = await start(tmp_path, pki, csms_port)
        try:
            charger, connection, task = await connect_charger(gateway)
            await boot(charger)
            cp = csms.charge_points["CP001"]
            got = await cp.call(call201.GetVariables(get_variable_data=[
                {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}},
                {"component": {"name": "NoSuchCtrlr"}, "variable": {"name": "Nothing"}},
                {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "SecurityProfile"}},
            ]))
            results = got.get_variable_result
            assert results[2]["attribute_status"] == "Accepted" and results[2]["attribute_value"] == "3", "the gateway's own variable"
            assert results[0]["attribute_status"] == "Accepted" and results[0]["attribute_value"] == "300"
            assert results[1]["attribute_status"] in ("UnknownComponent", "UnknownVariable")
            changed = await cp.call(call201.SetVariables(set_variable_data=[
                {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}, "attribute_value": "120"},
            ]))
            assert changed.set_variable_result[0]["attribute_status"] == "Accepted"
            sent = [json.loads(r) for r in charger.sent]
            assert any(f[0] == 3 for f in sent)
            changes = [json.loads(r)[3] for r in charger.received if json.loads(r)[0] == 2 and json.loads(r)[2] == "ChangeConfiguration"]
            assert changes == [{"key": "HeartbeatInterval", "value": "120"}]
            report = await cp.call(call201.GetBaseReport(request_id=5, report_base="FullInventory"))
            assert report.status == "Accepted"
            await wait_for(lambda: csms.reports and not csms.reports[-1].get("tbc", False), what="the last NotifyReport page")
            assert [r["seq_no"] for r in csms.reports] == list(range(len(csms.reports)))
            assert all(r["request_id"] == 5 for r in csms.reports)
            await connection.close()
            task.cancel()
        finally:
            gateway.stop()
            csms.server.close()

    asyncio.run(scenario())


OUTBOX = """version: 1
stages:
  - id: identity
    type: auth
  - id: offline
    type: outbox
    config: { offline_authorize: accept, retry_initial_delay: 0.5, retry_max_delay: 2 }
"""


def test_csms_down_mid_transaction_then_back(tmp_path, pki, csms_port):
    """Buffer mode + outbox: what happens while the CSMS is away reaches it afterwards, in order, with
    strictly increasing seqNo and offline: true."""

    async def scenario():
        gateway, csms = await start(tmp_path, pki, csms_port, pipeline=OUTBOX, north_extra="  offline_mode: buffer\n")
        try:
            charger, connection, task = await connect_charger(gateway)
            await boot(charger)
            started = await start_transaction(charger)
            local = started.transaction_id
            await meter_values(charger, local, 1100)
            await wait_for(lambda: len(csms.transaction_events) == 2, what="live events")
            await csms.kill()
            await asyncio.sleep(0.5)
            for wh in (1200, 1300, 1400):
                await meter_values(charger, local, wh)
            await charger.call(call.StopTransaction(transaction_id=local, meter_stop=1500, timestamp=now_iso(), reason="EVDisconnected"))
            assert len(csms.transaction_events) == 2, "nothing reached the CSMS while it was away"
            back = CSMS201(pki, csms_port)
            await back.start()
            await wait_for(lambda: any(e["event_type"] == "Ended" for e in back.transaction_events), timeout=20,
                           what="the replayed Ended")
            replayed = back.transaction_events
            first = csms.transaction_events
            transaction_id = first[0]["transaction_info"]["transaction_id"]
            assert [e["event_type"] for e in replayed] == ["Updated", "Updated", "Updated", "Ended"]
            assert all(e["transaction_info"]["transaction_id"] == transaction_id for e in replayed)
            assert all(e.get("offline") is True for e in replayed)
            values = [float(e["meter_value"][0]["sampled_value"][0]["value"]) for e in replayed[:3]]
            assert values == [1200, 1300, 1400], "in order"
            seq = [e["seq_no"] for e in first + replayed]
            assert all(b > a for a, b in zip(seq, seq[1:])), f"seqNo strictly increasing: {seq}"
            await connection.close()
            task.cancel()
            back.server.close()
        finally:
            gateway.stop()
            csms.server.close()

    asyncio.run(scenario())


def test_gateway_killed_mid_transaction_then_restarted(tmp_path, pki, csms_port):
    async def scenario():
        gateway, csms = await start(tmp_path, pki, csms_port)
        try:
            charger, connection, task = await connect_charger(gateway)
            await boot(charger)
            started = await start_transaction(charger)
            local = started.transaction_id
            await meter_values(charger, local, 1100)
            await wait_for(lambda: len(csms.transaction_events) == 2, what="live events")
            gateway.signal(signal.SIGKILL)
            gateway.process.wait()
            task.cancel()
            gateway.log_file.close()
            gateway.start()
            # The charger reconnects without booting again and carries on with the id it was given.
            charger, connection, task = await connect_charger(gateway)
            await meter_values(charger, local, 1200)
            await charger.call(call.StopTransaction(transaction_id=local, meter_stop=1300, timestamp=now_iso(), reason="Local"))
            await wait_for(lambda: len(csms.transaction_events) == 4, what="events after the restart")
            tx = csms.transaction_events
            assert [e["event_type"] for e in tx] == ["Started", "Updated", "Updated", "Ended"]
            assert len({e["transaction_info"]["transaction_id"] for e in tx}) == 1
            seq = [e["seq_no"] for e in tx]
            assert all(b > a for a, b in zip(seq, seq[1:])), f"seqNo strictly increasing across kill -9: {seq}"
            # A new transaction after the restart gets a new integer id.
            again = await start_transaction(charger, meter_start=1300)
            assert again.transaction_id != local
            await connection.close()
            task.cancel()
        finally:
            gateway.stop()
            csms.server.close()

    asyncio.run(scenario())


CERTS = """version: 1
stages:
  - id: identity
    type: auth
  - id: certificates
    type: certs
    config: { cpo_name: "Interop CPO" }
"""


def test_certificate_enrolment_in_201_form(tmp_path, pki, csms_port):
    """TriggerMessage(SignChargingStationCertificate) → SignCertificate → CertificateSigned, all 2.0.1, handled by
    the certs stage in its 1.6 Security Whitepaper form; the charger sees none of it."""

    async def scenario():
        gateway, csms = await start(tmp_path, pki, csms_port, pipeline=CERTS)
        try:
            charger, connection, task = await connect_charger(gateway)
            await boot(charger)
            await wait_for(lambda: "StartupOfTheDevice" in csms.security_events, what="the startup security event")
            cp = csms.charge_points["CP001"]
            trigger = await cp.call(call201.TriggerMessage(requested_message="SignChargingStationCertificate"))
            assert trigger.status == "Accepted"
            await wait_for(lambda: csms.csrs, what="the CSR")
            sign = [f[3] for f in frames_to_csms(csms) if f[0] == 2 and f[2] == "SignCertificate"][0]
            assert sign["certificateType"] == "ChargingStationCertificate"
            signed = await cp.call(call201.CertificateSigned(certificate_chain=pki.sign_csr(csms.csrs[0]),
                                                             certificate_type="ChargingStationCertificate"))
            assert signed.status == "Accepted"
            # The gateway moves to a link with the new certificate; the new link is still 2.0.1.
            await wait_for(lambda: len(csms.subprotocols) == 2, what="the link with the new certificate")
            assert csms.subprotocols == ["ocpp2.0.1", "ocpp2.0.1"]
            cp = csms.charge_points["CP001"]
            installed = await cp.call(call201.GetInstalledCertificateIds(certificate_type=["CSMSRootCertificate"]))
            assert installed.status in ("Accepted", "NotFound")
            unknown = await cp.call(call201.GetInstalledCertificateIds(certificate_type=["V2GRootCertificate"]))
            assert unknown.status == "NotFound"
            heartbeat = await charger.call(call.Heartbeat())
            assert heartbeat.current_time
            security = ("ExtendedTriggerMessage", "SignCertificate", "CertificateSigned", "TriggerMessage", "GetInstalledCertificateIds")
            assert all(json.loads(r)[2] not in security for r in charger.received if json.loads(r)[0] == 2)
            await connection.close()
            task.cancel()
        finally:
            gateway.stop()
            csms.server.close()

    asyncio.run(scenario())
    assert "PRIVATE KEY" not in (tmp_path / "gateway.log").read_text()


def test_a_transaction_started_while_the_csms_is_away(tmp_path, pki, csms_port):
    """The outbox answers StartTransaction with its own local id; on replay the adapter makes the UUID and the
    integer id, the outbox learns local → integer and rewrites the rest: one transaction at the CSMS, Started
    first, offline, seqNo 0, 1, 2, …; the charger's live frames after the link is back continue it."""

    async def scenario():
        gateway, csms = await start(tmp_path, pki, csms_port, pipeline=OUTBOX, north_extra="  offline_mode: buffer\n")
        try:
            charger, connection, task = await connect_charger(gateway)
            await boot(charger)
            await csms.kill()
            await asyncio.sleep(0.5)
            started = await start_transaction(charger, meter_start=500)
            local = started.transaction_id
            await meter_values(charger, local, 600)
            back = CSMS201(pki, csms_port)
            await back.start()
            await wait_for(lambda: len(back.transaction_events) == 2, timeout=20, what="the replay")
            await meter_values(charger, local, 700)  # live, with the outbox's local id
            await charger.call(call.StopTransaction(transaction_id=local, meter_stop=800, timestamp=now_iso(), reason="Local"))
            await wait_for(lambda: len(back.transaction_events) == 4, timeout=20, what="the live events")
            tx = back.transaction_events
            assert [e["event_type"] for e in tx] == ["Started", "Updated", "Updated", "Ended"]
            assert len({e["transaction_info"]["transaction_id"] for e in tx}) == 1
            assert [e["seq_no"] for e in tx] == [0, 1, 2, 3]
            assert tx[0].get("offline") is True and tx[1].get("offline") is True
            await connection.close()
            task.cancel()
            back.server.close()
        finally:
            gateway.stop()
            csms.server.close()

    asyncio.run(scenario())


RELOADED = """version: 1
stages:
  - id: firewall
    type: ids
  - id: identity
    type: auth
"""


def test_sighup_and_a_reconnect_without_boot_keep_the_translated_transaction(tmp_path, pki, csms_port):
    """A SIGHUP that changes the pipeline mid-transaction, then the charger dropping its socket and coming back
    without a BootNotification (as real firmware does): the CSMS sees one transaction, one Started and one Ended,
    seqNo strictly increasing, and the charger keeps the integer id it was given; the reconnect boots nobody."""

    async def scenario():
        gateway, csms = await start(tmp_path, pki, csms_port)
        try:
            charger, connection, task = await connect_charger(gateway)
            await boot(charger)
            started = await start_transaction(charger)
            local = started.transaction_id
            await meter_values(charger, local, 1100)
            await wait_for(lambda: len(csms.transaction_events) == 2, what="live events")

            gateway.pipeline_file.write_text(RELOADED)
            gateway.signal(signal.SIGHUP)
            await wait_for(lambda: "pipeline reloaded" in gateway.log(), what="the reload")
            await meter_values(charger, local, 1200)
            assert connection.state.name == "OPEN", "a reload disconnects nobody"

            await connection.close()
            task.cancel()
            await wait_for(lambda: not csms.connections, what="the north link to close with the charger")
            charger, connection, task = await connect_charger(gateway)
            await meter_values(charger, local, 1300)
            await charger.call(call.StopTransaction(transaction_id=local, meter_stop=1400, timestamp=now_iso(), reason="Local"))
            await wait_for(lambda: any(e["event_type"] == "Ended" for e in csms.transaction_events), what="Ended")

            tx = csms.transaction_events
            assert [e["event_type"] for e in tx] == ["Started", "Updated", "Updated", "Updated", "Ended"]
            assert len({e["transaction_info"]["transaction_id"] for e in tx}) == 1
            seq = [e["seq_no"] for e in tx]
            assert all(b > a for a, b in zip(seq, seq[1:])), f"seqNo strictly increasing across reload and reconnect: {seq}"
            values = [float(e["meter_value"][0]["sampled_value"][0]["value"]) for e in tx[1:4]]
            assert values == [1100, 1200, 1300]
            boots = [f for f in frames_to_csms(csms) if f[0] == 2 and f[2] == "BootNotification"]
            assert len(boots) == 1, f"the reconnect without a boot must not invent one: {boots}"
            assert_all_201(csms, charger)
            await connection.close()
            task.cancel()
        finally:
            gateway.stop()
            csms.server.close()

    asyncio.run(scenario())
