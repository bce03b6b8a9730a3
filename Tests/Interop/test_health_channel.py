"""The health channel against a real mosquitto broker and an independent MQTT client (paho)."""

import asyncio
import json
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
from conftest import GATEWAY_BIN, Gateway, boot, connect_charger, free_port, hang_up, now_iso, run_with, start_csms_and_gateway, wait_for
from ocpp.v16 import call

PIPELINE = """version: 1
stages:
  - id: identity
    type: auth
  - id: telemetry
    type: mqtt_tap
"""
ID_TAG = "SECRETTAG42"


class Broker:
    def __init__(self, folder, port):
        self.port = port
        self.config = folder / "mosquitto.conf"
        self.config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.process = None

    def start(self):
        self.process = subprocess.Popen(["mosquitto", "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                import socket

                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("mosquitto did not start")

    def stop(self):
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=10)


class Subscriber:
    """Everything published under the gateway's topics, as paho sees it."""

    def __init__(self, port):
        self.messages = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda client, userdata, flags, code, properties: client.subscribe("ocpp/#", qos=1)
        self.client.on_message = self._received
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _received(self, client, userdata, message):
        with self.lock:
            self.messages.append((message.topic, bytes(message.payload), message.retain))

    def topics(self):
        with self.lock:
            return [topic for topic, _, _ in self.messages]

    def all_bytes(self):
        with self.lock:
            return b"".join(topic.encode() + payload for topic, payload, _ in self.messages)

    def stop(self):
        self.client.loop_stop()
        self.client.disconnect()


def test_health_channel_routes_telemetry_strips_pii_and_survives_the_broker(tmp_path, pki, csms_port):
    broker = Broker(tmp_path, free_port())
    broker.start()
    subscriber = Subscriber(broker.port)
    gateway = Gateway(tmp_path, pki, csms_port, pipeline=PIPELINE)
    gateway.config.write_text(gateway.config.read_text() + f"""mqtt:
  url: "mqtt://127.0.0.1:{broker.port}"
  client_id: "gw-test"
  topic_prefix: "ocpp"
  queue_limit: 50
""")

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_charger(gateway)
        await boot(charger)
        await charger.call(call.Authorize(id_tag=ID_TAG))
        start = await charger.call(call.StartTransaction(connector_id=1, id_tag=ID_TAG, meter_start=0, timestamp=now_iso()))
        await charger.call(call.MeterValues(connector_id=1, transaction_id=start.transaction_id, meter_value=[{
            "timestamp": now_iso(), "sampledValue": [
                {"value": "1250", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                {"value": "230.4", "measurand": "Voltage", "phase": "L1-N", "unit": "V"},
            ]}]))
        await charger.call(call.StatusNotification(connector_id=1, error_code="GroundFailure", status="Faulted"))
        await wait_for(lambda: "ocpp/gw-test/CP001/status/1" in subscriber.topics(), what="the status on MQTT")

        topics = subscriber.topics()
        assert "ocpp/gw-test/status" in topics
        assert "ocpp/gw-test/CP001/telemetry/Voltage/L1-N" in topics
        assert "ocpp/gw-test/CP001/telemetry/Energy.Active.Import.Register" in topics
        assert "ocpp/gw-test/CP001/events" in topics
        assert ID_TAG.encode() not in subscriber.all_bytes(), "the idTag appears nowhere on MQTT"
        voltage = [json.loads(p) for t, p, _ in subscriber.messages if t.endswith("Voltage/L1-N")][0]
        assert voltage["v"] == 1 and voltage["value"] == "230.4" and voltage["charger"] == "CP001"
        # The CSMS got the value data only, and the real idTag.
        meter = [f for f in csms.frames_from("CP001") if '"MeterValues"' in f][0]
        assert "Energy.Active.Import.Register" in meter and "Voltage" not in meter
        assert any(ID_TAG in f for f in csms.frames_from("CP001") if '"Authorize"' in f)

        # Broker down: OCPP keeps flowing, the queue stays bounded, drops are counted.
        broker.stop()
        await asyncio.sleep(0.5)
        for _ in range(120):
            await charger.call(call.MeterValues(connector_id=1, meter_value=[{
                "timestamp": now_iso(), "sampledValue": [{"value": "230.1", "measurand": "Voltage", "phase": "L1-N"}]}]))
        metrics = gateway.metrics()
        dropped = [line for line in metrics.splitlines() if line.startswith('ocpp_gateway_mqtt_messages_total{result="dropped"}')]
        assert dropped and float(dropped[0].split()[-1]) > 0, metrics

        # The broker returns: publishing resumes.
        broker.start()
        before = len(subscriber.topics())
        for attempt in range(60):
            await charger.call(call.MeterValues(connector_id=1, meter_value=[{
                "timestamp": now_iso(), "sampledValue": [{"value": "229.9", "measurand": "Voltage", "phase": "L1-N"}]}]))
            if len(subscriber.topics()) > before:
                break
            await asyncio.sleep(0.5)
        assert len(subscriber.topics()) > before, "publishing resumed after the broker came back"
        await hang_up(csms, (connection, task))

    run_with(gateway, scenario, subscriber.stop, broker.stop)


def test_a_faulted_charger_leaves_a_dashcam_capture(tmp_path, pki, csms_port):
    pipeline = """version: 1
stages:
  - id: camera
    type: dashcam
    config: { after_frames: 2, after_seconds: 5 }
  - id: identity
    type: auth
"""
    gateway = Gateway(tmp_path, pki, csms_port, pipeline=pipeline)

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_charger(gateway)
        await boot(charger)
        await charger.call(call.Heartbeat())
        await charger.call(call.StatusNotification(connector_id=1, error_code="GroundFailure", status="Faulted"))
        await charger.call(call.Heartbeat())
        folder = gateway.state / "dashcam" / "CP001"
        await wait_for(lambda: folder.exists() and list(folder.glob("*.jsonl")), what="the capture")
        await hang_up(csms, (connection, task))

    try:
        asyncio.run(scenario())
        capture = sorted((gateway.state / "dashcam" / "CP001").glob("*.jsonl"))[0]
        lines = [json.loads(line) for line in capture.read_text().splitlines()]
        assert lines[0]["trigger"] == "Faulted"
        actions = [line["frame"][2] for line in lines[1:] if line["frame"][0] == 2]
        assert actions == ["BootNotification", "Heartbeat", "StatusNotification", "Heartbeat"], "frames before and after the fault"
        listing = subprocess.run([str(GATEWAY_BIN), "dashcam", "list", "--config", str(gateway.config)], capture_output=True, text=True)
        assert "Faulted" in listing.stdout and str(capture) in listing.stdout
        shown = subprocess.run([str(GATEWAY_BIN), "dashcam", "show", str(capture)], capture_output=True, text=True)
        assert "StatusNotification" in shown.stdout and shown.returncode == 0
    finally:
        gateway.stop()


def test_the_csms_keeps_its_sample_interval_while_mqtt_gets_every_sample(tmp_path, pki, csms_port):
    import datetime

    broker = Broker(tmp_path, free_port())
    broker.start()
    subscriber = Subscriber(broker.port)
    pipeline = PIPELINE + "    config: { health_interval: 1 }\n"
    gateway = Gateway(tmp_path, pki, csms_port, pipeline=pipeline)
    gateway.config.write_text(gateway.config.read_text() + f"""mqtt:
  url: "mqtt://127.0.0.1:{broker.port}"
  client_id: "gw-split"
  topic_prefix: "ocpp"
  version: "5"
""")

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_charger(gateway)
        changes = []
        original = charger.route_message

        async def record(raw):
            if '"ChangeConfiguration"' in raw:
                changes.append(json.loads(raw)[3])
            await original(raw)

        charger.route_message = record
        await boot(charger)
        cp = csms.charge_points["CP001"]
        assert (await cp.call(call.ChangeConfiguration(key="MeterValueSampleInterval", value="60"))).status == "Accepted"
        assert (await cp.call(call.ChangeConfiguration(key="MeterValuesSampledData", value="Energy.Active.Import.Register"))).status == "Accepted"
        await wait_for(lambda: any(c["key"] == "MeterValueSampleInterval" and c["value"] == "1" for c in changes),
                       what="the charger set to the health interval")
        start = datetime.datetime(2026, 11, 25, 10, 0, 0, tzinfo=datetime.timezone.utc)
        for second in range(120):
            await charger.call(call.MeterValues(connector_id=1, meter_value=[{
                "timestamp": (start + datetime.timedelta(seconds=second)).isoformat(), "sampledValue": [
                    {"value": str(1000 + second), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                    {"value": "230.0", "measurand": "Voltage", "phase": "L1-N", "unit": "V"},
                ]}]))
        north = [json.loads(f)[3] for f in csms.frames_from("CP001") if '"MeterValues"' in f]
        assert [m["meterValue"][0]["sampledValue"][0]["value"] for m in north] == ["1000", "1060"], "one a minute"
        assert all(len(m["meterValue"][0]["sampledValue"]) == 1 for m in north), "only the measurands the CSMS asked for"
        await wait_for(lambda: len([t for t in subscriber.topics() if t.endswith("Voltage/L1-N")]) == 120, what="every sample on MQTT")
        read = await cp.call(call.GetConfiguration(key=["MeterValueSampleInterval"]))
        assert read.configuration_key[0]["value"] == "60"
        await hang_up(csms, (connection, task))

    run_with(gateway, scenario, subscriber.stop, broker.stop)
