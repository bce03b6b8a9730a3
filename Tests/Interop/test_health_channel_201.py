"""The health channel for OCPP 2.0.1 chargers (issue 18): a 2.0.1 charger of the `ocpp` package over
ws:// (subprotocol ocpp2.0.1, Basic auth) through the gateway to a 2.0.1 CSMS of the `ocpp` package over
mutual TLS, with a real mosquitto and an independent MQTT client (paho).

Written against docs/health-channel.md ("OCPP 2.0.1")."""

import asyncio
import json

import websockets
from conftest import CSMS201, PASSWORD, Gateway, basic_auth, free_port, now_iso, run_with, wait_for
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call
from test_health_channel import Broker, Subscriber

PIPELINE = """version: 1
stages:
  - id: identity
    type: auth
  - id: telemetry
    type: mqtt_tap
    config:
      components:
        "EVSE/Temperature": mqtt
        "Connector/Problem": both
"""
TOKEN = "SECRET201TOKEN"
VEHICLE = "0A0B0C0D0E0F"


class Station201(ChargePoint201):
    """A 2.0.1 charging station of the `ocpp` package."""


def event(event_id, component, variable, value, evse=None, connector=None):
    component_value = {"name": component}
    if evse is not None:
        component_value["evse"] = {"id": evse, **({"connectorId": connector} if connector is not None else {})}
    return {"eventId": event_id, "timestamp": now_iso(), "trigger": "Delta", "actualValue": value,
            "eventNotificationType": "HardWiredNotification", "component": component_value, "variable": {"name": variable}}


def test_a_201_charger_s_device_model_events_go_to_mqtt_by_component_and_tokens_never_in_clear(tmp_path, pki, csms_port):
    broker = Broker(tmp_path, free_port())
    broker.start()
    subscriber = Subscriber(broker.port)
    gateway = Gateway(tmp_path, pki, csms_port, pipeline=PIPELINE)
    gateway.config.write_text(gateway.config.read_text() + f"""mqtt:
  url: "mqtt://127.0.0.1:{broker.port}"
  client_id: "gw-201"
  topic_prefix: "ocpp"
""")
    async def scenario():
        csms = CSMS201(pki, csms_port)
        await csms.start()
        gateway.start()
        connection = await websockets.connect(f"ws://127.0.0.1:{gateway.south_port}/ocpp/CP001", subprotocols=["ocpp2.0.1"],
                                              additional_headers=basic_auth("CP001", PASSWORD), open_timeout=10)
        assert connection.subprotocol == "ocpp2.0.1"
        station = Station201("CP001", connection, response_timeout=10)
        task = asyncio.create_task(station.start())
        await station.call(call.BootNotification(charging_station={"model": "S201", "vendorName": "NewCo"}, reason="PowerUp"))
        await station.call(call.StatusNotification(timestamp=now_iso(), connector_status="Available", evse_id=1, connector_id=1))
        await station.call(call.Authorize(id_token={"idToken": TOKEN, "type": "ISO14443"}))
        await station.call(call.TransactionEvent(
            event_type="Started", timestamp=now_iso(), trigger_reason="Authorized", seq_no=0,
            transaction_info={"transactionId": "tx-201"}, evse={"id": 1, "connectorId": 1},
            id_token={"idToken": TOKEN, "type": "ISO14443"},
            meter_value=[{"timestamp": now_iso(), "sampledValue": [
                {"value": 1250.5, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "Wh"}},
                {"value": 230.4, "measurand": "Voltage", "phase": "L1-N", "unitOfMeasure": {"unit": "V"}},
            ]}]))
        # Telemetry only: answered by the gateway, never seen by the CSMS.
        await station.call(call.NotifyEvent(generated_at=now_iso(), seq_no=0, event_data=[event(1, "EVSE", "Temperature", "41.5", evse=1)]))
        # Mixed: the CSMS gets the Problem item only.
        await station.call(call.NotifyEvent(generated_at=now_iso(), seq_no=0, event_data=[
            event(2, "EVSE", "Temperature", "42.0", evse=1), event(3, "Connector", "Problem", "true", evse=1, connector=1),
            event(4, "ConnectedEV", "VehicleId", VEHICLE, evse=1),
        ]))
        # A report: the Temperature item stays off the CSMS, the report still reaches it and ends.
        await station.call(call.NotifyReport(request_id=5, generated_at=now_iso(), seq_no=0, report_data=[
            {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Temperature"},
             "variableAttribute": [{"type": "Actual", "value": "40"}]},
        ]))
        await wait_for(lambda: any(t.endswith("/dm/ConnectedEV/1/0/VehicleId") for t in subscriber.topics()), what="the events on MQTT")

        topics = subscriber.topics()
        assert "ocpp/gw-201/CP001/dm/EVSE/1/0/Temperature" in topics
        assert "ocpp/gw-201/CP001/dm/Connector/1/1/Problem" in topics
        assert "ocpp/gw-201/CP001/telemetry/Voltage/L1-N" in topics
        assert "ocpp/gw-201/CP001/status/1/1" in topics
        assert TOKEN.encode() not in subscriber.all_bytes(), "the idToken appears nowhere on MQTT"
        assert VEHICLE.encode() not in subscriber.all_bytes(), "the vehicle id appears nowhere on MQTT"

        frames = [json.loads(raw) for raw in csms.frames_from("CP001")]
        events = [f[3] for f in frames if f[0] == 2 and f[2] == "NotifyEvent"]
        assert len(events) == 1, "the telemetry-only NotifyEvent never reached the CSMS"
        assert [e["variable"]["name"] for e in events[0]["eventData"]] == ["Problem", "VehicleId"]
        assert events[0]["eventData"][1]["actualValue"] == VEHICLE, "the CSMS gets the real values"
        reports = [f[3] for f in frames if f[0] == 2 and f[2] == "NotifyReport"]
        assert len(reports) == 1 and "reportData" not in reports[0] and not reports[0].get("tbc", False)
        transactions = [f[3] for f in frames if f[0] == 2 and f[2] == "TransactionEvent"]
        assert transactions and transactions[0]["idToken"]["idToken"] == TOKEN, "billing reaches the CSMS untouched"
        assert any(f[2] == "Authorize" and TOKEN in json.dumps(f[3]) for f in frames if f[0] == 2)

        await connection.close()
        task.cancel()
        csms.server.close()

    run_with(gateway, scenario, subscriber.stop, broker.stop)
