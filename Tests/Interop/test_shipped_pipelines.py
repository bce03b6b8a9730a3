"""The relay scenario once per shipped pipeline (pipelines/*.yaml), as the operator gets it: the file is used
unchanged, the independent `ocpp` package plays charger and CSMS, and a pipeline with an `mqtt_tap` stage gets a
real mosquitto. Every stage of the file must have run (its per-stage timer has samples), every CALL the charger
sent must reach the CSMS byte for byte and in order, and the CSMS's CALLs must be answered with the charger's
own bytes; answers to the gateway's own CALLs (smart charging reads the charger's limits) never reach the CSMS."""

import asyncio
import json
import re
import urllib.request

import pytest
from conftest import REPO, Gateway, boot, connect_charger, free_port, now_iso, run_with, start_csms_and_gateway, wait_for
from ocpp.v16 import call
from ocpp.v16.enums import AuthorizationStatus, RegistrationStatus, ResetType
from test_health_channel import Broker, Subscriber

SHIPPED = sorted((REPO / "pipelines").glob("*.yaml"))


def stage_ids(text: str) -> list:
    """The `- id:` of every stage, commented-out lines ignored."""
    return [m.group(1) for m in re.finditer(r"^\s*-\s*id:\s*([\w.-]+)", text, re.MULTILINE)]


def needs_broker(text: str) -> bool:
    return re.search(r"^[^#\n]*type:\s*mqtt_tap\b", text, re.MULTILINE) is not None


def test_every_shipped_pipeline_is_covered():
    """A new file in pipelines/ is picked up by the parametrisation below (and by `make test-shipped`)."""
    names = {path.name for path in SHIPPED}
    assert {"default.yaml", "site.yaml", "health-channel.yaml"} <= names
    site = (REPO / "pipelines" / "site.yaml").read_text()
    types = re.findall(r"^\s*type:\s*(\w+)", site, re.MULTILINE)
    assert sorted(types) == sorted(["ids", "auth", "certs", "smart_charging", "compressor", "mqtt_tap", "dashcam"])


def test_the_example_production_configuration_is_production_shaped():
    """docs/deploy/gateway.yaml: hashes not passwords, /etc and /var/lib paths, MQTT, admin on loopback only."""
    text = (REPO / "docs" / "deploy" / "gateway.yaml").read_text()
    active = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert "password_hash:" in active and not re.search(r"\bpassword:", active), "password hashes only"
    assert re.search(r'^state_dir:\s*"/var/lib/ocpp-gateway"', active, re.MULTILINE)
    assert re.search(r'^admin:\s*{\s*listen:\s*"127\.0\.0\.1:\d+"\s*}', active, re.MULTILINE), "admin on loopback"
    assert re.search(r"^mqtt:", active, re.MULTILINE) and re.search(r'^\s+url:\s*"mqtts://', active, re.MULTILINE)
    assert re.search(r'^\s+url:\s*"wss://', active, re.MULTILINE) and "allow_insecure" not in active
    assert re.search(r"^\s+security_profile:\s*3", active, re.MULTILINE)
    assert "/etc/ocpp-gateway" in text


@pytest.mark.parametrize("pipeline_file", SHIPPED, ids=[path.stem for path in SHIPPED])
def test_relay_through_shipped_pipeline(tmp_path, pki, csms_port, pipeline_file):
    text = pipeline_file.read_text()
    broker = subscriber = None
    if needs_broker(text):
        broker = Broker(tmp_path, free_port())
        broker.start()
        subscriber = Subscriber(broker.port)
    gateway = Gateway(tmp_path, pki, csms_port, pipeline=text)
    if broker:
        gateway.config.write_text(gateway.config.read_text() + f"""mqtt:
  url: "mqtt://127.0.0.1:{broker.port}"
  client_id: "gw-shipped"
  topic_prefix: "ocpp"
""")

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_charger(gateway)
        assert (await boot(charger)).status == RegistrationStatus.accepted
        csms_side = csms.charge_points["CP001"]
        sent_by_csms = []
        original_send = csms_side._send

        async def recording_send(message):
            sent_by_csms.append(message)
            await original_send(message)

        csms_side._send = recording_send

        await charger.call(call.Heartbeat())
        await charger.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Available"))
        authorize = await charger.call(call.Authorize(id_tag="04A2B3C4"))
        assert authorize.id_tag_info["status"] == AuthorizationStatus.accepted
        start = await charger.call(
            call.StartTransaction(connector_id=1, id_tag="04A2B3C4", meter_start=1000, timestamp=now_iso()))
        await charger.call(call.MeterValues(connector_id=1, transaction_id=start.transaction_id, meter_value=[{
            "timestamp": now_iso(), "sampledValue": [
                {"value": "1250.0", "measurand": "Energy.Active.Import.Register", "unit": "Wh",
                 "format": "SignedData", "context": "Sample.Periodic"}]}]))
        await charger.call(
            call.StopTransaction(meter_stop=1750, timestamp=now_iso(), transaction_id=start.transaction_id, reason="Local"))

        remote = await csms_side.call(call.RemoteStartTransaction(id_tag="04A2B3C4", connector_id=1))
        assert remote.status == "Accepted"
        configuration = await csms_side.call(call.GetConfiguration(key=["HeartbeatInterval"]))
        assert configuration.configuration_key[0]["key"] == "HeartbeatInterval"
        reset = await csms_side.call(call.Reset(type=ResetType.soft))
        assert reset.status == "Accepted"

        charger_calls = [frame for frame in charger.sent if json.loads(frame)[0] == 2]
        csms_call_ids = {json.loads(frame)[1] for frame in sent_by_csms if json.loads(frame)[0] == 2}
        answers_to_csms = [frame for frame in charger.sent if json.loads(frame)[0] != 2 and json.loads(frame)[1] in csms_call_ids]
        answers_to_gateway = [frame for frame in charger.sent if json.loads(frame)[0] != 2 and json.loads(frame)[1] not in csms_call_ids]
        assert len(answers_to_csms) == 3
        if re.search(r"^[^#\n]*type:\s*smart_charging\b", text, re.MULTILINE):
            # `discover: true` read the charger's limits; the answer is the gateway's, not the CSMS's.
            assert any("ChargingScheduleMaxPeriods" in frame or "configurationKey" in frame for frame in answers_to_gateway)
        charger_call_ids = {json.loads(frame)[1] for frame in charger_calls}

        def relayed():
            return [frame for frame in csms.frames_from("CP001") if json.loads(frame)[1] in charger_call_ids | csms_call_ids]

        await wait_for(lambda: len(relayed()) == len(charger_calls) + len(answers_to_csms),
                       what="every charger CALL and every answer to the CSMS at the CSMS")
        # Byte for byte and in order: the charger's CALLs, and its answers to the CSMS's CALLs. The gateway's
        # own CALLs to the CSMS (the certs stage's SecurityEventNotification, SignCertificate) come on top.
        assert [frame for frame in relayed() if json.loads(frame)[0] == 2] == charger_calls
        assert [frame for frame in relayed() if json.loads(frame)[0] != 2] == answers_to_csms
        received = csms.frames_from("CP001")
        assert not set(answers_to_gateway) & set(received), "answers to the gateway's own CALLs stay in the gateway"
        assert csms.client_subjects == [{"commonName": "CP001", "organizationName": "Interop CPO"}]

        if subscriber:
            await wait_for(lambda: "ocpp/gw-shipped/CP001/status/1" in subscriber.topics(), what="the status on MQTT")
            assert b"04A2B3C4" not in subscriber.all_bytes(), "idTags are hashed on the health channel"

        with urllib.request.urlopen(f"http://127.0.0.1:{gateway.admin_port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        for stage in stage_ids(text):
            count = re.search(rf'^ocpp_gateway_stage_duration_seconds_count{{stage="{re.escape(stage)}"}} (\d+)', metrics,
                              re.MULTILINE)
            assert count and int(count.group(1)) > 0, f"stage {stage} of {pipeline_file.name} ran"
        await connection.close()
        task.cancel()
        csms.server.close()

    cleanups = [subscriber.stop, broker.stop] if broker else []
    run_with(gateway, scenario, *cleanups)
    assert gateway.process.returncode == 0, gateway.log()
