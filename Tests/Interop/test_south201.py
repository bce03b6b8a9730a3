"""OCPP 2.0.1 charging stations south over wss:// (issue 18): the `ocpp` package's 2.0.1 charging
station role with a client certificate (Security Profile 3) and with Basic auth over TLS (Security
Profile 2), relayed without translation to its 2.0.1 CSMS role over mutual TLS; a 1.6 legacy charger
on the same gateway at once; refusals (wrong CA, expired, CN mismatch, SP3 over plain ws://)."""

import asyncio
import base64
import datetime
import json
import ssl
import urllib.request

import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201

from conftest import CSMSChargePoint, PKI, csms201_charge_point_class, Gateway, boot, connect_charger, free_port, now_iso, wait_for

STATION_PASSWORD = "station-password-0123456789"


class DualCSMS:
    """A mutual-TLS CSMS speaking 2.0.1 or 1.6, whichever the gateway's north link asks for."""

    def __init__(self, pki: PKI, port: int):
        self.pki, self.port = pki, port
        self.received = []
        self.subprotocols = {}
        self.server = None
        # What conftest's 2.0.1 CSMS handler records.
        self.transaction_events, self.reports, self.csrs, self.security_events = [], [], [], []
        self.authorize_status = "Accepted"

    async def start(self):
        self.server = await websockets.serve(self._on_connect, "127.0.0.1", self.port, subprotocols=["ocpp2.0.1", "ocpp1.6"],
                                             ssl=self.pki.server_context())

    async def _on_connect(self, connection):
        charger_id = connection.request.path.rsplit("/", 1)[-1]
        self.subprotocols[charger_id] = connection.subprotocol
        peer = csms201_charge_point_class()(charger_id, connection, self) if connection.subprotocol == "ocpp2.0.1" \
            else CSMSChargePoint(charger_id, connection, self)
        try:
            await peer.start()
        except websockets.exceptions.ConnectionClosed:
            pass

    def frames_from(self, charger_id):
        return [raw for cid, raw in self.received if cid == charger_id]


class Station(ChargePoint201):
    """The `ocpp` package's 2.0.1 charging station role; keeps every frame it sends."""

    def __init__(self, charge_point_id, connection):
        super().__init__(charge_point_id, connection, response_timeout=10)
        self.sent = []

    async def _send(self, message):
        self.sent.append(message)
        await super()._send(message)


def client_certificate(ca: PKI, folder, name, cn, valid_from=-1, valid_days=2):
    """A charger client certificate (CN = `cn`) issued by `ca`, valid from `valid_from` days."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=valid_from))
        .not_valid_after(now + datetime.timedelta(days=valid_from + valid_days))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.ca_key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Site:
    """The gateway with both listeners: ws:// for the legacy CP001, wss:// for the 2.0.1 stations."""

    def __init__(self, tmp_path, pki):
        self.pki = pki
        self.csms = DualCSMS(pki, free_port())
        self.gateway = Gateway(tmp_path, pki, self.csms.port, chargers=("CP001", "CS201", "CS202"), pipeline=(
            "version: 1\nstages:\n  - id: identity\n    type: auth\n  - id: guard\n    type: ids\n"
            "  - id: certificates\n    type: certs\n"))
        self.tls_port = free_port()
        config = self.gateway.config.read_text()
        south_tls = (f'  tls: {{ listen: "127.0.0.1:{self.tls_port}", cert_file: "{pki.server_cert}", '
                     f'key_file: "{pki.server_key}", client_ca_file: "{pki.ca_file}" }}\n  chargers:\n')
        config = config.replace("  chargers:\n", south_tls, 1)
        lines = config.splitlines(keepends=True)
        lines = [line for line in lines if not line.lstrip().startswith(("CS201:", "CS202:"))]
        config = "".join(lines).replace(
            "north:\n",
            "    CS201: { security_profile: 3, ocpp_versions: [\"2.0.1\"] }\n"
            f"    CS202: {{ security_profile: 2, password: \"{STATION_PASSWORD}\" }}\nnorth:\n", 1)
        self.gateway.config.write_text(config)

    async def start(self):
        await self.csms.start()
        self.gateway.start()
        await wait_for(lambda: "listening for chargers over TLS" in self.gateway.log(), what="the TLS listener")

    def tls_context(self, cert=None, key=None):
        context = ssl.create_default_context(cafile=str(self.pki.ca_file))
        if cert:
            context.load_cert_chain(cert, key)
        return context

    async def station(self, charger_id, cert=None, key=None, headers=None, tls=True):
        url = f"{'wss' if tls else 'ws'}://127.0.0.1:{self.tls_port if tls else self.gateway.south_port}/ocpp/{charger_id}"
        connection = await websockets.connect(url, subprotocols=["ocpp2.0.1"], ssl=self.tls_context(cert, key) if tls else None,
                                              additional_headers=headers or {}, open_timeout=10)
        station = Station(charger_id, connection)
        task = asyncio.create_task(station.start())
        return station, connection, task

    def status(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.gateway.admin_port}/api/status", timeout=5) as response:
            return json.loads(response.read())

    def security_events(self):
        return self.status()["security_events"]

    def stop(self):
        self.gateway.stop()


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def a_transaction(station):
    """Boot, a transaction (Started, Updated with a meter value, Ended) and a NotifyEvent."""
    booted = await station.call(call201.BootNotification(charging_station={"model": "S-201", "vendor_name": "StationCo"},
                                                         reason="PowerUp"))
    assert booted.status == "Accepted"
    common = {"transaction_info": {"transaction_id": "tx-1"}, "evse": {"id": 1, "connector_id": 1}}
    await station.call(call201.TransactionEvent(event_type="Started", timestamp=now_iso(), trigger_reason="Authorized", seq_no=0,
                                                id_token={"id_token": "04A2B3C4", "type": "ISO14443"}, **common))
    await station.call(call201.TransactionEvent(
        event_type="Updated", timestamp=now_iso(), trigger_reason="MeterValuePeriodic", seq_no=1,
        meter_value=[{"timestamp": now_iso(), "sampled_value": [{"value": 1234.5, "measurand": "Energy.Active.Import.Register"}]}],
        **common))
    await station.call(call201.TransactionEvent(event_type="Ended", timestamp=now_iso(), trigger_reason="EVCommunicationLost", seq_no=2,
                                                **common))
    await station.call(call201.NotifyEvent(generated_at=now_iso(), seq_no=0, event_data=[{
        "event_id": 1, "timestamp": now_iso(), "trigger": "Delta", "actual_value": "Faulted",
        "event_notification_type": "HardWiredNotification", "component": {"name": "EVSE", "evse": {"id": 1}},
        "variable": {"name": "Problem"}}]))


def calls(frames):
    return [frame for frame in frames if json.loads(frame)[0] == 2]


def test_sp3_station_is_relayed_in_201_byte_for_byte_next_to_a_legacy_charger(tmp_path, pki):
    site = Site(tmp_path, pki)
    cert, key = client_certificate(pki, tmp_path, "cs201", "CS201")

    async def scenario():
        await site.start()
        station, connection, task = await site.station("CS201", cert, key)
        legacy, legacy_connection, legacy_task = await connect_charger(site.gateway, "CP001")
        assert connection.subprotocol == "ocpp2.0.1" and legacy_connection.subprotocol == "ocpp1.6"
        assert (await boot(legacy)).status == "Accepted"
        await a_transaction(station)
        assert site.csms.subprotocols == {"CS201": "ocpp2.0.1", "CP001": "ocpp1.6"}
        # No translation: what the CSMS got from the station is what the station sent, byte for byte.
        assert calls(site.csms.frames_from("CS201")) == calls(station.sent)
        assert any('"NotifyEvent"' in frame for frame in site.csms.frames_from("CS201"))
        assert any('"BootNotification"' in frame for frame in site.csms.frames_from("CP001"))
        # The status page tells each charger's own profile south: 3 over TLS with its certificate, 1 over ws://.
        profiles = {charger["id"]: charger["south_security_profile"] for charger in site.status()["chargers"]}
        assert profiles == {"CS201": 3, "CP001": 1}, profiles
        for link, job in ((connection, task), (legacy_connection, legacy_task)):
            await link.close()
            job.cancel()
        metrics = site.gateway.metrics()
        assert 'action="TransactionEvent"' in metrics, "2.0.1 actions are labelled from the 2.0.1 catalogue"

    try:
        asyncio.run(scenario())
    finally:
        site.stop()


def test_sp2_station_with_basic_auth_over_tls(tmp_path, pki):
    site = Site(tmp_path, pki)

    async def scenario():
        await site.start()
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            await site.station("CS202", headers=basic("CS202", "wrong"))
        assert refused.value.response.status_code == 401
        station, connection, task = await site.station("CS202", headers=basic("CS202", STATION_PASSWORD))
        await a_transaction(station)
        assert calls(site.csms.frames_from("CS202")) == calls(station.sent)
        # Over plain ws:// the same charger is refused even with the right password.
        with pytest.raises(websockets.exceptions.InvalidStatus) as plain:
            await site.station("CS202", headers=basic("CS202", STATION_PASSWORD), tls=False)
        assert plain.value.response.status_code == 403
        await connection.close()
        task.cancel()

    try:
        asyncio.run(scenario())
    finally:
        site.stop()


def test_bad_certificates_and_plain_ws_are_refused_with_security_events(tmp_path, pki):
    site = Site(tmp_path, pki)
    stranger = PKI(tmp_path / "stranger", ca_name="stranger CA")
    wrong_ca = client_certificate(stranger, tmp_path, "wrong-ca", "CS201")
    expired = client_certificate(pki, tmp_path, "expired", "CS201", valid_from=-3, valid_days=1)
    mismatch = client_certificate(pki, tmp_path, "mismatch", "CS999")

    async def refused(*args, **kwargs):
        with pytest.raises(Exception) as failure:
            station, connection, task = await site.station("CS201", *args, **kwargs)
            await station.call(call201.Heartbeat())   # TLS 1.3: the verdict may come after the client's handshake
        return failure.value

    async def scenario():
        await site.start()
        for cert, key in (wrong_ca, expired):
            await refused(cert, key)
        cn = await refused(*mismatch)
        assert isinstance(cn, websockets.exceptions.InvalidStatus) and cn.response.status_code == 403
        none = await refused()
        assert isinstance(none, websockets.exceptions.InvalidStatus) and none.response.status_code == 403
        plain = await refused(tls=False)
        assert isinstance(plain, websockets.exceptions.InvalidStatus) and plain.response.status_code == 403
        await wait_for(lambda: len(site.security_events()) >= 5, what="the security events")
        events = site.security_events()
        kinds = sorted((event["type"], event["charger"]) for event in events)
        assert kinds.count(("InvalidChargingStationCertificate", "CS201")) == 2, kinds
        assert kinds.count(("FailedToAuthenticateAtCsms", "CS201")) == 3, kinds
        infos = " ".join(event.get("tech_info") or "" for event in events)
        for reason in ("certificate_untrusted", "certificate_expired", "CN 'CS999'", "none was presented", "must connect over wss://"):
            assert reason in infos, infos
        log = site.gateway.log()
        assert "charger refused in the TLS handshake" in log and "charger refused by its security profile" in log
        metrics = site.gateway.metrics()
        for line in ('ocpp_gateway_south_tls_refusals_total{reason="certificate_untrusted"} 1',
                     'ocpp_gateway_south_tls_refusals_total{reason="certificate_expired"} 1',
                     'ocpp_gateway_south_security_refusals_total{reason="cn_mismatch"} 1',
                     'ocpp_gateway_south_security_refusals_total{reason="tls_required"} 1'):
            assert line in metrics, line
        assert "CS201" not in site.csms.subprotocols, "a refused station never gets a north link"

    try:
        asyncio.run(scenario())
    finally:
        site.stop()
