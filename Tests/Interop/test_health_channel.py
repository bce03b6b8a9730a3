"""The health channel against a real mosquitto broker and an independent MQTT client (paho)."""

import asyncio
import json
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
from conftest import (GATEWAY_BIN, Gateway, LegacyCharger, boot, connect_charger, free_port, hang_up, now_iso, run_with,
                      start_csms_and_gateway, wait_for)
from ocpp.routing import on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action, ConfigurationStatus

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


# ---------------------------------------------------------------------------------------------
# Charger firmware as the field notes describe it


class EnergyAndPowerCharger(LegacyCharger):
    """Has an energy register and a power meter, nothing else: any MeterValuesSampledData list naming
    another measurand is Rejected as a whole. It samples what it is configured for, every
    MeterValueSampleInterval seconds, with millisecond timestamps."""

    SUPPORTED = {"Energy.Active.Import.Register", "Power.Active.Import"}

    def __init__(self, charge_point_id, connection):
        super().__init__(charge_point_id, connection)
        self.config = {"MeterValuesSampledData": "Energy.Active.Import.Register", "MeterValuesSampledDataMaxLength": "4",
                       "MeterValueSampleInterval": "60"}
        self.changes = []

    @on(Action.get_configuration)
    def on_get_configuration(self, key=None, **_):
        keys = key or sorted(self.config)
        return call_result.GetConfiguration(
            configuration_key=[{"key": k, "readonly": False, "value": self.config[k]} for k in keys if k in self.config],
            unknown_key=[k for k in keys if k not in self.config])

    @on(Action.change_configuration)
    def on_change_configuration(self, key, value, **_):
        self.changes.append((key, value))
        if key == "MeterValuesSampledData":
            wanted = value.split(",")
            ok = all(m in self.SUPPORTED for m in wanted) and len(wanted) <= int(self.config["MeterValuesSampledDataMaxLength"])
        else:
            ok = True
        if ok:
            self.config[key] = value
        return call_result.ChangeConfiguration(status=ConfigurationStatus.accepted if ok else ConfigurationStatus.rejected)

    def sample(self, moment, second):
        values = {"Energy.Active.Import.Register": (str(1000 + second), "Wh"), "Power.Active.Import": ("7200.0", "W")}
        measurands = self.config["MeterValuesSampledData"].split(",")
        return {"timestamp": iso_millis(moment), "sampledValue": [
            {"value": values[m][0], "measurand": m, "unit": values[m][1]} for m in measurands if m in values]}


def iso_millis(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


async def connect_firmware(gateway, charger_class, charger_id="CP001"):
    import websockets
    from conftest import PASSWORD, basic_auth

    connection = await websockets.connect(f"ws://127.0.0.1:{gateway.south_port}/ocpp/{charger_id}", subprotocols=["ocpp1.6"],
                                          additional_headers=basic_auth(charger_id, PASSWORD), open_timeout=10)
    charger = charger_class(charger_id, connection)
    return charger, connection, asyncio.create_task(charger.start())


def with_broker(gateway, broker, client_id):
    gateway.config.write_text(gateway.config.read_text() + f"""mqtt:
  url: "mqtt://127.0.0.1:{broker.port}"
  client_id: "{client_id}"
  topic_prefix: "ocpp"
""")


def published(subscriber, suffix):
    with subscriber.lock:
        return [json.loads(payload) for topic, payload, _ in subscriber.messages if topic.endswith(suffix)]


def test_a_charger_with_only_energy_and_power_still_feeds_the_health_channel(tmp_path, pki, csms_port):
    import datetime

    broker = Broker(tmp_path, free_port())
    broker.start()
    subscriber = Subscriber(broker.port)
    gateway = Gateway(tmp_path, pki, csms_port, pipeline=PIPELINE + "    config: { health_interval: 1 }\n")
    with_broker(gateway, broker, "gw-fw")

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_firmware(gateway, EnergyAndPowerCharger)
        await boot(charger)
        await wait_for(lambda: charger.config["MeterValuesSampledData"] == "Energy.Active.Import.Register,Power.Active.Import"
                       and len(charger.changes) >= 6, what="the charger set to the measurands it has")
        assert charger.config["MeterValueSampleInterval"] == "1"
        assert all(len(value.split(",")) <= 4 for key, value in charger.changes if key == "MeterValuesSampledData")

        # The charger samples at the health interval, as configured: Power reaches MQTT every second.
        start = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        for second in range(5):
            interval = int(charger.config["MeterValueSampleInterval"])
            moment = start + datetime.timedelta(seconds=second * interval, milliseconds=752)
            await charger.call(call.MeterValues(connector_id=1, meter_value=[charger.sample(moment, second)]))
        await wait_for(lambda: len(published(subscriber, "/CP001/telemetry/Power.Active.Import")) == 5, what="Power on MQTT")
        power = published(subscriber, "/CP001/telemetry/Power.Active.Import")
        times = [datetime.datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")) for p in power]
        assert [(b - a).total_seconds() for a, b in zip(times, times[1:])] == [1.0] * 4, "at health_interval"
        assert all(p["value"] == "7200.0" and p["timestamp"].endswith(".752Z") for p in power)

        # The CSMS is told the charger's truth.
        cp = csms.charge_points["CP001"]
        refused = await cp.call(call.ChangeConfiguration(key="MeterValuesSampledData", value="Energy.Active.Import.Register,Voltage"))
        assert refused.status == "Rejected"
        read = await cp.call(call.GetConfiguration(key=["MeterValuesSampledData"]))
        assert read.configuration_key[0]["value"] == "Energy.Active.Import.Register", "it reads back what it had"
        taken = await cp.call(call.ChangeConfiguration(key="MeterValuesSampledData",
                                                       value="Energy.Active.Import.Register,Power.Active.Import"))
        assert taken.status == "Accepted"

        # The refusals are counted, per measurand.
        metrics = gateway.metrics()
        for measurand in ["Voltage", "Current.Import", "Temperature"]:
            line = [l for l in metrics.splitlines()
                    if l.startswith(f'ocpp_gateway_health_measurands_refused_total{{measurand="{measurand}"}}')]
            assert line and float(line[0].split()[-1]) >= 1, metrics
        assert 'measurand="Power.Active.Import"' not in metrics
        assert "Temperature" in gateway.log()
        await hang_up(csms, (connection, task))

    run_with(gateway, scenario, subscriber.stop, broker.stop)


def test_published_values_are_the_chargers_strings_and_times_keep_milliseconds(tmp_path, pki, csms_port):
    import datetime

    broker = Broker(tmp_path, free_port())
    broker.start()
    subscriber = Subscriber(broker.port)
    pipeline = """version: 1
stages:
  - id: identity
    type: auth
  - id: compress
    type: compressor
  - id: telemetry
    type: mqtt_tap
"""
    gateway = Gateway(tmp_path, pki, csms_port, pipeline=pipeline)
    with_broker(gateway, broker, "gw-strings")

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_charger(gateway)
        await boot(charger)
        start = await charger.call(call.StartTransaction(connector_id=1, id_tag="TAG", meter_start=0, timestamp=now_iso()))
        begin = datetime.datetime(2026, 11, 25, 5, 39, 40, 752000, tzinfo=datetime.timezone.utc)
        sent = {}
        for second in range(30):
            moment = iso_millis(begin + datetime.timedelta(seconds=second))
            amps = "16.00" if 10 <= second < 20 else "15.00"
            sent[moment] = amps
            await charger.call(call.MeterValues(connector_id=1, transaction_id=start.transaction_id, meter_value=[{
                "timestamp": moment, "sampledValue": [
                    {"value": amps, "measurand": "Current.Import", "phase": "L1", "unit": "A"},
                    {"value": "229.00", "measurand": "Voltage", "phase": "L1-N", "unit": "V"},
                ]}]))
        await charger.call(call.StopTransaction(transaction_id=start.transaction_id, meter_stop=10, timestamp=now_iso()))
        await wait_for(lambda: published(subscriber, "/telemetry/Voltage/L1-N")
                       and published(subscriber, "/telemetry/Voltage/L1-N")[-1]["timestamp"] == iso_millis(begin + datetime.timedelta(seconds=29)),
                       what="the series closed at the transaction's end")
        current = published(subscriber, "/telemetry/Current.Import/L1")
        voltage = published(subscriber, "/telemetry/Voltage/L1-N")
        assert 2 <= len(voltage) < 30 and 4 <= len(current) < 30, "compressed"
        assert [v["value"] for v in voltage] == ["229.00"] * len(voltage), "the charger's string, not 229"
        assert {c["value"] for c in current} == {"15.00", "16.00"}, "the 15→16 A step is kept, spelled as the charger did"
        for point in current + voltage:
            assert point["timestamp"] in sent, f"{point['timestamp']}: a sample's own timestamp, milliseconds kept"
        for point in current:
            assert sent[point["timestamp"]] == point["value"], "points SDT did not move are the samples themselves"
        assert current[0]["compression"] == {"algorithm": "sdt", "deviation": 0.16, "deviation_unit": "A", "max_time": 900}
        await hang_up(csms, (connection, task))

    run_with(gateway, scenario, subscriber.stop, broker.stop)
