"""The Grafana dashboard (docs/grafana/ocpp-gateway.json) against a real Prometheus (Debian's `prometheus`)
scraping a real gateway. The gateway runs the shipped site pipeline plus an outbox (buffer mode), with a real
mosquitto and `--log-format json`; the scenario drives a charger through a session, firewall refusals, a
malformed frame, a wrong password, too many sockets from one address, a SIGHUP and a CSMS outage with replay.
Then EVERY PromQL expression of the dashboard goes through Prometheus' HTTP API: a parse or evaluation error
fails, and so does an empty answer for a metric the scenario exercised. Metrics the scenario cannot produce are
listed in ALLOWED_EMPTY with the reason."""

import asyncio
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import websockets
from conftest import REPO, CSMS, Gateway, basic_auth, boot, connect_charger, free_port, now_iso, wait_for
from ocpp.v16 import call
from test_health_channel import Broker

DASHBOARD = REPO / "docs" / "grafana" / "ocpp-gateway.json"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

# Metrics a dashboard query may find empty here, and why. Every other metric a query names must answer.
ALLOWED_EMPTY = {
    "ocpp_gateway_health_measurands_refused_total":
        "made only when a charger refuses a health measurand under mqtt_tap `health_interval` (test_health_channel.py)",
    "ocpp_gateway_health_interval_refused_total":
        "made only when a charger refuses `health_interval` itself (test_health_channel.py)",
    "ocpp_gateway_outbox_failed_total":
        "made only when the CSMS refuses a replayed CALL with a CALLERROR `error_attempts` times (test_offline.py)",
}

OUTBOX = """
  - id: offline          # buffer mode: answers while the CSMS is away, replays afterwards
    type: outbox
    config: { retry_initial_delay: 0.5, retry_max_delay: 2 }
"""


def dashboard_expressions():
    """Every `expr` of every panel target, with the panel's title, and the template variable queries."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = []

    def walk(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append((f'{panel["title"]} [{target["refId"]}]', target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    variables = [v for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return found, variables


def metrics_in(expression):
    names = set(re.findall(r"\b(ocpp_gateway_[a-z_]+|up)\b", expression))
    return {re.sub(r"_(bucket|sum|count)$", "", n) if n.startswith("ocpp_gateway_stage_duration") else n for n in names}


class Prometheus:
    def __init__(self, folder, target):
        self.port = free_port()
        self.folder = folder / "prometheus"
        self.folder.mkdir()
        self.config = self.folder / "prometheus.yml"
        self.config.write_text(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: ocpp-gateway
    static_configs:
      - targets: ["{target}"]
""")
        self.log = self.folder / "prometheus.log"
        self.process = None

    def start(self):
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [PROMETHEUS, f"--config.file={self.config}", f"--storage.tsdb.path={self.folder / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            assert self.process.poll() is None, f"prometheus exited:\n{self.log.read_text()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready:\n{self.log.read_text()}")

    def query(self, expression):
        """(result list, None) or (None, error text): parse and evaluation errors come back as HTTP 400/422."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            return None, error.read().decode(errors="replace")
        if body.get("status") != "success":
            return None, json.dumps(body)
        return body["data"]["result"], None

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)


def test_every_dashboard_query_runs_on_a_real_prometheus(tmp_path, pki, csms_port):
    assert shutil.which(PROMETHEUS), "Debian's prometheus is missing: `make deps` installs it (APT_PACKAGES)"
    expressions, variables = dashboard_expressions()
    assert len(expressions) >= 20, "the dashboard has its panels"
    broker = Broker(tmp_path, free_port())
    broker.start()
    pipeline = (REPO / "pipelines" / "site.yaml").read_text() + OUTBOX
    gateway = Gateway(tmp_path, pki, csms_port, chargers=("CP001", "CP002"), pipeline=pipeline,
                      north_extra="  offline_mode: buffer\n")
    gateway.config.write_text(gateway.config.read_text() + f"""mqtt:
  url: "mqtt://127.0.0.1:{broker.port}"
  client_id: "gw-prometheus"
  topic_prefix: "ocpp"
""")
    gateway.extra_args = ["--log-format", "json"]
    target = f"127.0.0.1:{gateway.admin_port}"
    prometheus = Prometheus(tmp_path, target)

    async def scenario():
        csms = CSMS(pki, csms_port)
        await csms.start()
        gateway.start()
        charger, connection, task = await connect_charger(gateway)
        await boot(charger)
        await charger.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Available"))
        await charger.call(call.Authorize(id_tag="04A2B3C4"))
        start = await charger.call(call.StartTransaction(connector_id=1, id_tag="04A2B3C4", meter_start=0, timestamp=now_iso()))
        await charger.call(call.MeterValues(connector_id=1, transaction_id=start.transaction_id, meter_value=[{
            "timestamp": now_iso(), "sampledValue": [
                {"value": "1250", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                {"value": "230.4", "measurand": "Voltage", "phase": "L1-N", "unit": "V"}]}]))
        # Vendor diagnostics go to MQTT only; the gateway answers the charger itself.
        await charger.call(call.DataTransfer(vendor_id="LegacyCo", message_id="Diagnostics", data="fan ok"))
        # The firewall refuses an action that is not OCPP; the router refuses a frame that is not JSON.
        await connection.send(json.dumps([2, "invented-1", "OpenTheDoor", {}]))
        await connection.send("this is not an OCPP frame")
        # A wrong password (401) and more sockets from one address than south.max_connections_per_source (8).
        with pytest.raises(Exception):
            await websockets.connect(f"ws://127.0.0.1:{gateway.south_port}/ocpp/CP001", subprotocols=["ocpp1.6"],
                                     additional_headers=basic_auth("CP001", "wrong-password-123"), open_timeout=5)
        idle = [socket.create_connection(("127.0.0.1", gateway.south_port)) for _ in range(9)]
        await asyncio.sleep(0.5)
        for sock in idle:
            sock.close()
        # A reload, then the CSMS goes away: the outbox takes the charger's CALLs (two status changes of one
        # connector coalesce), the north link fails to reconnect, and everything is replayed when it is back.
        gateway.signal(__import__("signal").SIGHUP)
        await csms.kill()
        await asyncio.sleep(0.5)
        await asyncio.wait_for(charger.call(call.Heartbeat()), 10)
        await charger.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Charging"))
        await charger.call(call.StatusNotification(connector_id=1, error_code="NoError", status="SuspendedEV"))
        await charger.call(call.StopTransaction(meter_stop=1750, timestamp=now_iso(), transaction_id=start.transaction_id))
        # A charger arriving during the outage: its first north attempt fails (and is counted); buffer mode
        # admits it anyway.
        second, second_connection, second_task = await connect_charger(gateway, "CP002")
        await asyncio.sleep(3)  # scraped while the outbox holds CALLs
        csms = CSMS(pki, csms_port)
        await csms.start()
        await wait_for(lambda: any('"StopTransaction"' in f for f in csms.frames_from("CP001")), timeout=30,
                       what="the replayed StopTransaction at the CSMS")

        # The gateway keeps running with the charger connected while every query goes through Prometheus.
        found, variable_values = await asyncio.to_thread(check_queries)
        for link, link_task in ((connection, task), (second_connection, second_task)):
            await link.close()
            link_task.cancel()
        csms.server.close()
        return found, variable_values

    def check_queries():
        substitutions = {"$__rate_interval": "1m", "$__interval": "15s"}
        # The template variable: Grafana's label_values(metric, label) is `count by (label) (metric)` in PromQL.
        for variable in variables:
            match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["query"]["query"])
            assert match, f"variable {variable['name']}: {variable['query']}"
            deadline = time.time() + 30
            while True:
                result, error = prometheus.query(f"count by ({match.group(2)}) ({match.group(1)})")
                assert error is None, error
                values = [r["metric"].get(match.group(2)) for r in result]
                if values or time.time() > deadline:
                    break
                time.sleep(0.5)
            assert values == [target], f"${variable['name']} offers {values}"
            # As Grafana does for a regex matcher: regex-escaped, then escaped again for the PromQL string.
            substitutions[f"${variable['name']}"] = re.escape(target).replace("\\", "\\\\")

        pending = dict(expressions)
        answers = {}
        deadline = time.time() + 40
        while pending:
            for title, expression in list(pending.items()):
                concrete = expression
                for variable, value in substitutions.items():
                    concrete = concrete.replace(variable, value)
                assert "$" not in concrete, f"{title}: an unknown variable in {expression}"
                result, error = prometheus.query(concrete)
                assert error is None, f"{title}: Prometheus refused {concrete}: {error}"
                answers[title] = result
                allowed = metrics_in(expression) & ALLOWED_EMPTY.keys()
                if result or allowed:
                    del pending[title]
            if not pending or time.time() > deadline:
                break
            time.sleep(1)
        return answers, pending

    prometheus.start()
    try:
        answers, empty = asyncio.run(scenario())
        metrics_text = gateway.metrics() if gateway.process.poll() is None else ""
    finally:
        gateway.stop()
        prometheus.stop()
        broker.stop()

    assert not empty, "queries over exercised metrics returned no series:\n" + "\n".join(
        f"  {t}: {e}" for t, e in empty.items()) + "\n/metrics had:\n" + "\n".join(
        line for line in metrics_text.splitlines() if any(m in line for e in empty.values() for m in metrics_in(e)))
    exercised = set().union(*(metrics_in(e) for _, e in expressions)) - ALLOWED_EMPTY.keys() - {"up"}
    for metric in sorted(exercised):
        assert re.search(rf"^{metric}(_bucket|_sum|_count)?[{{ ]", metrics_text, re.MULTILINE), f"{metric} exported"
    # A few answers must also say what happened, not only exist.
    def value(title):
        return sum(float(r["value"][1]) for r in answers[title])
    assert value("North connect failures [A]") > 0
    assert value("Firewall refusals [A]") > 0
    assert value("Connected chargers [A]") == 2
    assert {r["metric"].get("reason") for r in answers["South connection limits [A]"]} >= {"too_many_from_source"}
    assert {r["metric"].get("verdict") for r in answers["Refused and broken frames [A]"]} >= {"malformed"}
    assert {r["metric"].get("action") for r in answers["Answered or held by the gateway [A]"]} >= {"DataTransfer", "StopTransaction"}

    # --log-format json: every line the gateway wrote is one JSON object with the record's fields.
    lines = [line for line in gateway.log().splitlines() if line.strip()]
    assert len(lines) > 10
    for line in lines:
        record = json.loads(line)
        assert {"ts", "level", "msg", "logger"} <= record.keys(), line
    assert any(json.loads(line)["msg"].startswith("SIGHUP") for line in lines)
