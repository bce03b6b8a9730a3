"""The field status page in a real browser (headless Chromium from Debian, driven by selenium with
Debian's chromedriver), its JSON twin, `ocpp-gateway status`, and /readyz — against the real gateway
with a pipeline of ids, auth, certs, smart_charging and dashcam, an `ocpp` 1.6 charger and CSMS."""

import asyncio
import datetime
import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import GATEWAY_BIN, free_port, NORTH_PASSWORD, PASSWORD, REPO, Gateway, boot, connect_charger, hang_up, run_with, start_csms_and_gateway, wait_for
from field_peers import A_ONLY, FieldFirmware
from test_health_channel import Broker
from ocpp.v16 import call

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ADMIN_TOKEN = "status-page-token-0123456789abcdef"
# A charger's own security event whose text tries to inject markup into the page.
HOSTILE = '<script>document.title="pwned"</script><b>bold</b>'

PIPELINE = """version: 1
stages:
  - id: camera
    type: dashcam
    config: { after_frames: 1, after_seconds: 2 }
  - id: firewall
    type: ids
  - id: identity
    type: auth
  - id: certificates
    type: certs
    config: { cpo_name: "Interop CPO" }
  - id: smart
    type: smart_charging
"""


def get(gateway, path, headers=None):
    request = urllib.request.Request(f"http://127.0.0.1:{gateway.admin_port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:  # not listening (yet, or any more)
        return 0, str(error)


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER), \
        "Debian's chromium and chromium-driver are missing: `make` installs them (APT_PACKAGES)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def test_the_status_page_in_a_real_browser(tmp_path, pki, csms_port):
    gateway = Gateway(tmp_path, pki, csms_port, pipeline=PIPELINE)
    # A token is configured: loopback needs none, but it must never show on the page.
    gateway.config.write_text(gateway.config.read_text().replace(
        f'admin: {{ listen: "127.0.0.1:{gateway.admin_port}" }}',
        f'admin: {{ listen: "127.0.0.1:{gateway.admin_port}", token: "{ADMIN_TOKEN}" }}'))
    broker = Broker(tmp_path, free_port())
    broker.start()
    gateway.config.write_text(gateway.config.read_text() + f'mqtt: {{ url: "mqtt://127.0.0.1:{broker.port}", client_id: "cabinet-7", queue_limit: 500 }}\n')
    # The committed docs/status-page.png is refreshed only on request (UPDATE_SCREENSHOT=1), so a test run
    # leaves the working tree clean.
    screenshot = REPO / "docs" / "status-page.png" if os.environ.get("UPDATE_SCREENSHOT") else tmp_path / "status-page.png"

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        status, body = get(gateway, "/readyz")
        assert status == 200 and json.loads(body)["ready"] is True

        charger, connection, task = await connect_charger(gateway)
        FieldFirmware(charger, A_ONLY)
        await boot(charger)
        await charger.call(call.Heartbeat())
        await charger.call(call.SecurityEventNotification(
            type="TamperDetectionActivated", timestamp=datetime.datetime.now(datetime.timezone.utc).isoformat(), tech_info=HOSTILE))
        await asyncio.sleep(0.3)  # the gateway reads the charger's limits after boot
        profile = {
            "charging_profile_id": 7, "stack_level": 0, "charging_profile_purpose": "ChargePointMaxProfile",
            "charging_profile_kind": "Absolute",
            "charging_schedule": {
                "start_schedule": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
                "charging_rate_unit": "A", "charging_schedule_period": [{"start_period": 0, "limit": 16}]},
        }
        answer = await csms.charge_points["CP001"].call(call.SetChargingProfile(connector_id=0, cs_charging_profiles=profile))
        assert answer.status == "Accepted"
        await charger.call(call.StatusNotification(connector_id=1, error_code="GroundFailure", status="Faulted"))
        await charger.call(call.Heartbeat())
        await wait_for(lambda: list((gateway.state / "dashcam" / "CP001").glob("*.jsonl")), what="the dashcam capture")
        await wait_for(lambda: "TamperDetectionActivated" in csms.security_events, what="the security event at the CSMS")

        # The JSON twin.
        status, body = get(gateway, "/api/status")
        assert status == 200, body
        snapshot = json.loads(body)
        [row] = snapshot["chargers"]
        assert row["id"] == "CP001" and row["north_link"] == "up"
        assert row["south_security_profile"] == 1 and row["north_security_profile"] == 3
        assert row["remote_address"].startswith("127.0.0.1:")
        assert row["last_from_charger"]["message"] == "Heartbeat"
        assert row["last_from_csms"]["message"] == "CALLRESULT (Heartbeat)", row
        assert row["certificate_expiry"], "the certs stage's expiry of the charger's certificate"
        assert row["current_limit"] == "16.0 A × 3", row
        stages = {stage["id"]: stage for stage in snapshot["pipeline"]["stages"]}
        assert list(stages) == ["camera", "firewall", "identity", "certificates", "smart"]
        assert stages["camera"]["frames"] >= 8 and stages["camera"]["verdicts"]["forward"] >= 8
        assert stages["smart"]["verdicts"]["modify"] >= 1, "the CSMS profile compiled for the charger"
        types = [event["type"] for event in snapshot["security_events"]]
        assert "TamperDetectionActivated" in types and "StartupOfTheDevice" in types
        [capture] = snapshot["captures"]
        assert capture["trigger"] == "Faulted" and capture["path"].startswith("/captures/CP001/")
        assert snapshot["health_channel"]["connected"] is True and snapshot["health_channel"]["queue_limit"] == 500
        assert snapshot["health_channel"]["broker"] == f"127.0.0.1:{broker.port}"
        status, charger_json = get(gateway, "/api/chargers/CP001")
        assert status == 200 and json.loads(charger_json)["id"] == "CP001"
        assert get(gateway, "/api/chargers/CP404")[0] == 404

        # Path checks on downloads: only what the dashcam wrote.
        for path in ("/captures/CP001/..%2F..%2Fgateway.yaml", "/captures/..%2Fchargers/CP001", "/captures/CP001/cert.pem",
                     "/captures/%2E%2E/gateway.yaml", "/captures/CP001/" + capture["path"].rsplit("/", 1)[1] + "x"):
            assert get(gateway, path)[0] == 404, path

        # The page, in Chromium.
        def in_the_browser():
            from selenium.webdriver.common.by import By

            driver = browser()
            try:
                driver.get(f"http://127.0.0.1:{gateway.admin_port}/")
                assert driver.title == "ocpp-gateway status", "no script ran: the title is the page's own"
                chargers = driver.find_element(By.ID, "chargers").text
                assert "CP001" in chargers and "16.0 A × 3" in chargers and "up" in chargers
                pipeline = driver.find_element(By.ID, "pipeline").text
                for stage in ("camera", "firewall", "identity", "certificates", "smart", "dashcam", "smart_charging"):
                    assert stage in pipeline
                events = driver.find_element(By.ID, "security-events")
                assert "TamperDetectionActivated" in events.text
                assert HOSTILE in events.text, "shown as text"
                assert not driver.find_elements(By.CSS_SELECTOR, "#security-events script, #security-events b")
                source = driver.page_source
                for secret in (PASSWORD, NORTH_PASSWORD, ADMIN_TOKEN, "PRIVATE KEY", "pbkdf2"):
                    assert secret not in source
                assert "connected" in driver.find_element(By.ID, "health-channel").text
                assert driver.find_element(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]')
                driver.set_window_size(1200, 1300)
                driver.save_screenshot(str(screenshot))
                link = driver.find_element(By.CSS_SELECTOR, "#captures a")
                link.click()
                text = driver.find_element(By.TAG_NAME, "body").text
                assert '"trigger":"Faulted"' in text.replace(" ", "") and "StatusNotification" in text
                assert driver.current_url.startswith(f"http://127.0.0.1:{gateway.admin_port}/captures/CP001/")
            finally:
                driver.quit()

        await asyncio.to_thread(in_the_browser)
        await hang_up(csms, (connection, task))

    run_with(gateway, scenario, broker.stop)
    assert screenshot.exists() and screenshot.stat().st_size > 10_000


def test_ocpp_gateway_status_prints_the_snapshot_and_says_when_the_gateway_is_down(tmp_path, pki, csms_port):
    gateway = Gateway(tmp_path, pki, csms_port)

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_charger(gateway)
        await boot(charger)
        await charger.call(call.Heartbeat())

        text = await asyncio.to_thread(subprocess.run, [str(GATEWAY_BIN), "status", "--config", str(gateway.config)],
                                       capture_output=True, text=True, timeout=30)
        assert text.returncode == 0, text.stderr
        lines = text.stdout.splitlines()
        assert lines[0].startswith("gateway  ready, health ok, 1 charger connected")
        [row] = [line for line in lines if line.strip().startswith("CP001")]
        assert "127.0.0.1:" in row and "1/3" in row and " up " in row and "Heartbeat" in row
        [stage] = [line for line in lines if " identity " in line]
        assert stage.split()[2] == "auth"

        raw = await asyncio.to_thread(subprocess.run, [str(GATEWAY_BIN), "status", "--url", f"http://127.0.0.1:{gateway.admin_port}",
                                                       "--json"], capture_output=True, text=True, timeout=30)
        assert raw.returncode == 0 and json.loads(raw.stdout)["chargers"][0]["id"] == "CP001"
        await hang_up(csms, (connection, task))

    run_with(gateway, scenario)
    down = subprocess.run([str(GATEWAY_BIN), "status", "--config", str(gateway.config)], capture_output=True, text=True, timeout=30)
    assert down.returncode == 1
    assert "cannot reach the gateway" in down.stderr and "is it running?" in down.stderr


def test_readyz_is_503_while_draining_and_healthz_stays(tmp_path, pki, csms_port):
    import signal

    import websockets
    from conftest import basic_auth

    gateway = Gateway(tmp_path, pki, csms_port)
    gateway.config.write_text(gateway.config.read_text().replace("north:\n", "  drain_timeout: 3\nnorth:\n", 1))

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        # A charger that never answers the CSMS: its CALL in flight keeps the drain going for drain_timeout.
        connection = await websockets.connect(f"ws://127.0.0.1:{gateway.south_port}/ocpp/CP001", subprotocols=["ocpp1.6"],
                                              additional_headers=basic_auth("CP001", PASSWORD))
        await connection.send('[2,"b1","BootNotification",{"chargePointModel":"LC-22","chargePointVendor":"LegacyCo"}]')
        assert '"Accepted"' in await connection.recv()
        assert get(gateway, "/readyz")[0] == 200
        csms_call = asyncio.create_task(csms.charge_points["CP001"].call(call.TriggerMessage(requested_message="Heartbeat")))
        assert "TriggerMessage" in await connection.recv()
        gateway.signal(signal.SIGTERM)
        await wait_for(lambda: get(gateway, "/readyz")[0] == 503, what="/readyz 503 while draining")
        status, body = get(gateway, "/readyz")
        assert status == 503 and json.loads(body)["ready"] is False
        assert get(gateway, "/healthz")[0] in (200, 503), "/healthz still answers while draining"
        csms_call.cancel()
        await connection.close()
        csms.server.close()

    run_with(gateway, scenario)
