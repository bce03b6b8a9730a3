"""Shared fixtures for interop tests: a test-made PKI, the real gateway binary, and the
mobilityhouse `ocpp` package as both CSMS (mutual TLS) and legacy charger (ws:// + Basic auth)."""

import asyncio
import base64
import datetime
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import (
    Action,
    AuthorizationStatus,
    ConfigurationStatus,
    RegistrationStatus,
    RemoteStartStopStatus,
    ResetStatus,
)

REPO = Path(__file__).resolve().parents[2]
GATEWAY_BIN = Path(os.environ.get("OCPP_GATEWAY_BIN", REPO / ".build" / "debug" / "ocpp-gateway"))
PASSWORD = "0123456789abcdef0123"
NORTH_PASSWORD = "00112233445566778899aabbccddeeff"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


# ---------------------------------------------------------------------------------------------
# PKI made by the test


class PKI:
    """A CA, a CSMS server certificate (localhost, 127.0.0.1) and charger client certificates."""

    def __init__(self, folder: Path, ca_name: str = "interop test CA"):
        self.folder = folder
        (folder / "pki").mkdir(parents=True, exist_ok=True)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
        self.ca_name = name
        self.ca_cert = (
            self._builder(name, self.ca_key.public_key(), days=2)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_file = folder / "pki" / "ca.pem"
        self.ca_file.write_bytes(self.ca_cert.public_bytes(serialization.Encoding.PEM))
        server_key = ec.generate_private_key(ec.SECP256R1())
        server = (
            self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]), server_key.public_key())
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.server_cert = folder / "pki" / "csms.pem"
        self.server_key = folder / "pki" / "csms-key.pem"
        self.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
        self._write_key(self.server_key, server_key)

    def _builder(self, subject, public_key, days=1):
        now = datetime.datetime.now(datetime.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(getattr(self, "ca_name", subject))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days))
        )

    @staticmethod
    def _write_key(path: Path, key):
        path.touch(mode=0o600)
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        os.chmod(path, 0o600)

    def issue_charger(self, state_dir: Path, charger_id: str):
        folder = state_dir / "chargers" / charger_id
        folder.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            self._builder(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COMMON_NAME, charger_id),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Interop CPO"),
                    ]
                ),
                key.public_key(),
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._write_key(folder / "key.pem", key)

    def server_context(self, verify_mode=ssl.CERT_REQUIRED) -> ssl.SSLContext:
        """What a Security Profile 3 CSMS does: TLS 1.2+, client certificate required
        (CERT_OPTIONAL for a CSMS that also serves Security Profile 2)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.server_cert, self.server_key)
        context.load_verify_locations(self.ca_file)
        context.verify_mode = verify_mode
        return context

    def sign_csr(self, csr_pem: str, days=30):
        """The CPO's CA signs a charger's CSR."""
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        assert csr.is_signature_valid
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.ca_name)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode()


# ---------------------------------------------------------------------------------------------
# The CSMS: mobilityhouse ocpp, over wss:// with ssl.CERT_REQUIRED


class CSMSChargePoint(ChargePoint):
    def __init__(self, charge_point_id, connection, csms):
        super().__init__(charge_point_id, connection, response_timeout=10)
        self.csms = csms
        self.transaction_id = 0

    async def route_message(self, raw_msg):
        self.csms.received.append((self.id, raw_msg))
        await super().route_message(raw_msg)

    @on(Action.boot_notification)
    def on_boot(self, **_):
        return call_result.BootNotification(current_time=now_iso(), interval=300, status=RegistrationStatus.accepted)

    @on(Action.heartbeat)
    def on_heartbeat(self, **_):
        return call_result.Heartbeat(current_time=now_iso())

    @on(Action.status_notification)
    def on_status(self, **_):
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, **_):
        return call_result.Authorize(id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action.start_transaction)
    def on_start(self, **_):
        self.transaction_id += 1
        return call_result.StartTransaction(
            transaction_id=self.transaction_id, id_tag_info={"status": AuthorizationStatus.accepted}
        )

    @on(Action.meter_values)
    def on_meter_values(self, **_):
        return call_result.MeterValues()

    @on(Action.stop_transaction)
    def on_stop(self, **_):
        return call_result.StopTransaction(id_tag_info={"status": AuthorizationStatus.accepted})

    @on(Action.sign_certificate)
    def on_sign_certificate(self, csr, **_):
        self.csms.csrs.append(csr)
        return call_result.SignCertificate(status="Accepted")

    @on(Action.security_event_notification)
    def on_security_event(self, type, **_):
        self.csms.security_events.append(type)
        return call_result.SecurityEventNotification()


class CSMS:
    """A Security Profile 3 CSMS built on the `ocpp` package."""

    def __init__(self, pki: PKI, port: int, verify_mode=ssl.CERT_REQUIRED):
        self.pki = pki
        self.port = port
        self.verify_mode = verify_mode
        self.csrs = []
        self.security_events = []
        self.authorization_headers = []
        self.received = []  # (charger id, raw frame) in arrival order
        self.charge_points = {}
        self.client_subjects = []
        self.connections = set()
        self.server = None

    async def start(self):
        self.server = await websockets.serve(
            self._on_connect, "127.0.0.1", self.port, subprotocols=["ocpp1.6"],
            ssl=self.pki.server_context(self.verify_mode),
        )

    async def _on_connect(self, connection):
        charger_id = connection.request.path.rsplit("/", 1)[-1]
        self.authorization_headers.append(connection.request.headers.get("Authorization"))
        peer = connection.transport.get_extra_info("peercert") or {}
        self.client_subjects.append(dict(x[0] for x in peer.get("subject", ())))
        cp = CSMSChargePoint(charger_id, connection, self)
        self.charge_points[charger_id] = cp
        self.connections.add(connection)
        try:
            await cp.start()
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            self.connections.discard(connection)

    def frames_from(self, charger_id):
        return [raw for cid, raw in self.received if cid == charger_id]

    async def kill(self):
        """Vanish like a crashed process: no close frames, sockets reset."""
        self.server.close(close_connections=False)
        for connection in list(self.connections):
            connection.transport.abort()
        await self.server.wait_closed()


# ---------------------------------------------------------------------------------------------
# The legacy charger: mobilityhouse ocpp over ws:// + Basic auth


class LegacyCharger(ChargePoint):
    def __init__(self, charge_point_id, connection):
        super().__init__(charge_point_id, connection, response_timeout=10)
        self.sent = []
        self.received = []

    async def route_message(self, raw_msg):
        self.received.append(raw_msg)
        await super().route_message(raw_msg)

    async def _send(self, message):
        self.sent.append(message)
        await super()._send(message)

    @on(Action.remote_start_transaction)
    def on_remote_start(self, **_):
        return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.accepted)

    @on(Action.get_configuration)
    def on_get_configuration(self, **_):
        return call_result.GetConfiguration(
            configuration_key=[{"key": "HeartbeatInterval", "readonly": False, "value": "300"}]
        )

    @on(Action.change_configuration)
    def on_change_configuration(self, **_):
        return call_result.ChangeConfiguration(status=ConfigurationStatus.accepted)

    @on(Action.reset)
    def on_reset(self, **_):
        return call_result.Reset(status=ResetStatus.accepted)


def basic_auth(user: str, password: str) -> dict:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def connect_charger(gateway, charger_id="CP001", password=PASSWORD, **kwargs):
    connection = await websockets.connect(
        f"ws://127.0.0.1:{gateway.south_port}/ocpp/{charger_id}",
        subprotocols=["ocpp1.6"],
        additional_headers=basic_auth(charger_id, password),
        open_timeout=10,
        **kwargs,
    )
    charger = LegacyCharger(charger_id, connection)
    task = asyncio.create_task(charger.start())
    return charger, connection, task


# ---------------------------------------------------------------------------------------------
# The gateway under test: the real binary, configured by the test


class Gateway:
    def __init__(self, folder: Path, pki: PKI, north_port: int, chargers=("CP001",), pipeline=None, north_extra="",
                 north_profile=3, issue_certificates=True):
        self.folder = folder
        self.south_port = free_port()
        self.admin_port = free_port()
        self.state = folder / "state"
        for charger_id in chargers:
            if issue_certificates:
                pki.issue_charger(self.state, charger_id)
        self.pipeline_file = folder / "pipeline.yaml"
        self.pipeline_file.write_text(pipeline or "version: 1\nstages:\n  - id: identity\n    type: auth\n")
        charger_lines = "".join(
            f'    {c}: {{ password: "{PASSWORD}", north_password: "{NORTH_PASSWORD}" }}\n' for c in chargers
        )
        self.config = folder / "gateway.yaml"
        self.config.write_text(
            f"""south:
  listen: "127.0.0.1:{self.south_port}"
  path: "/ocpp"
  security_profile: 1
  chargers:
{charger_lines}north:
  url: "wss://127.0.0.1:{north_port}/ocpp"
  security_profile: {north_profile}
  ca_file: "{pki.ca_file}"
  server_name: "localhost"
  reconnect: {{ initial_delay: 0.2, max_delay: 1 }}
{north_extra}state_dir: "{self.state}"
pipeline: "{self.pipeline_file}"
admin: {{ listen: "127.0.0.1:{self.admin_port}" }}
"""
        )
        self.log_path = folder / "gateway.log"
        self.process = None
        self.extra_args = []  # more `run` options, e.g. ["--log-format", "json"]

    def start(self):
        assert GATEWAY_BIN.exists(), f"{GATEWAY_BIN} is missing; run `make build` first"
        self.log_file = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [str(GATEWAY_BIN), "run", "--config", str(self.config), "--log-level", "debug", *self.extra_args],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            assert self.process.poll() is None, f"gateway exited early:\n{self.log()}"
            try:
                socket.create_connection(("127.0.0.1", self.south_port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"gateway did not start listening:\n{self.log()}")

    def signal(self, sig):
        self.process.send_signal(sig)

    def stop(self) -> int:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=5) as response:
            return response.read().decode()


@pytest.fixture
def pki(tmp_path):
    return PKI(tmp_path)


@pytest.fixture
def csms_port():
    return free_port()


@pytest.fixture
def gateway(tmp_path, pki, csms_port):
    instance = Gateway(tmp_path, pki, csms_port)
    yield instance
    instance.stop()


async def start_csms_and_gateway(gateway, pki, csms_port, **csms_options):
    """The usual opening: the CSMS listens, then the gateway starts."""
    csms = CSMS(pki, csms_port, **csms_options)
    await csms.start()
    gateway.start()
    return csms


async def boot(charger):
    from ocpp.v16 import call

    return await charger.call(call.BootNotification(charge_point_model="LC-22", charge_point_vendor="LegacyCo"))


def run_with(gateway, scenario, *cleanups):
    """Runs an async scenario; the gateway, and anything else given, is stopped whatever happens."""
    try:
        asyncio.run(scenario())
    finally:
        gateway.stop()
        for cleanup in cleanups:
            cleanup()


async def hang_up(csms, *links):
    """Closes chargers' (connection, task) pairs, then stops the CSMS listening."""
    for connection, task in links:
        await connection.close()
        task.cancel()
    csms.server.close()


async def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------------------------------------
# An OCPP 2.0.1 CSMS: the `ocpp` package's v201 role over wss:// with ssl.CERT_REQUIRED (north.ocpp_version: "2.0.1")


def csms201_charge_point_class():
    """The v201 handler class, built on first use so that 1.6-only test runs need nothing of ocpp.v201."""
    from ocpp.v201 import ChargePoint as ChargePoint201
    from ocpp.v201 import call_result as result201
    from ocpp.v201.enums import Action as Action201

    class CSMS201ChargePoint(ChargePoint201):
        def __init__(self, charge_point_id, connection, csms):
            super().__init__(charge_point_id, connection, response_timeout=10)
            self.csms = csms

        async def route_message(self, raw_msg):
            self.csms.received.append((self.id, raw_msg))
            await super().route_message(raw_msg)

        @on(Action201.boot_notification)
        def on_boot(self, **_):
            return result201.BootNotification(current_time=now_iso(), interval=300, status="Accepted")

        @on(Action201.heartbeat)
        def on_heartbeat(self, **_):
            return result201.Heartbeat(current_time=now_iso())

        @on(Action201.status_notification)
        def on_status(self, **_):
            return result201.StatusNotification()

        @on(Action201.authorize)
        def on_authorize(self, id_token, **_):
            return result201.Authorize(id_token_info={"status": self.csms.authorize_status})

        @on(Action201.transaction_event)
        def on_transaction_event(self, event_type, **kwargs):
            self.csms.transaction_events.append(dict(event_type=event_type, **kwargs))
            return result201.TransactionEvent(id_token_info={"status": "Accepted"} if kwargs.get("id_token") else None)

        @on(Action201.meter_values)
        def on_meter_values(self, **_):
            return result201.MeterValues()

        @on(Action201.notify_event)
        def on_notify_event(self, **_):
            return result201.NotifyEvent()

        @on(Action201.notify_report)
        def on_notify_report(self, **kwargs):
            self.csms.reports.append(kwargs)
            return result201.NotifyReport()

        @on(Action201.sign_certificate)
        def on_sign_certificate(self, csr, **_):
            self.csms.csrs.append(csr)
            return result201.SignCertificate(status="Accepted")

        @on(Action201.security_event_notification)
        def on_security_event(self, type, **_):
            self.csms.security_events.append(type)
            return result201.SecurityEventNotification()

        @on(Action201.log_status_notification)
        def on_log_status(self, **_):
            return result201.LogStatusNotification()

        @on(Action201.firmware_status_notification)
        def on_firmware_status(self, **_):
            return result201.FirmwareStatusNotification()

        @on(Action201.data_transfer)
        def on_data_transfer(self, **_):
            return result201.DataTransfer(status="Rejected")

    return CSMS201ChargePoint


class CSMS201(CSMS):
    """A Security Profile 3 OCPP 2.0.1 CSMS built on the `ocpp` package (it validates every payload it receives)."""

    def __init__(self, pki: PKI, port: int, verify_mode=ssl.CERT_REQUIRED):
        super().__init__(pki, port, verify_mode)
        self.transaction_events = []
        self.reports = []
        self.authorize_status = "Accepted"
        self.subprotocols = []

    async def start(self):
        self.server = await websockets.serve(
            self._on_connect, "127.0.0.1", self.port, subprotocols=["ocpp2.0.1"],
            ssl=self.pki.server_context(self.verify_mode),
        )

    async def _on_connect(self, connection):
        charger_id = connection.request.path.rsplit("/", 1)[-1]
        self.subprotocols.append(connection.subprotocol)
        cp = csms201_charge_point_class()(charger_id, connection, self)
        self.charge_points[charger_id] = cp
        self.connections.add(connection)
        try:
            await cp.start()
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            self.connections.discard(connection)
