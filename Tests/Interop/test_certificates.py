"""The migration an operator performs: a legacy charger goes from Security Profile 2 to 3 without
noticing, while the gateway enrols a key pair and certificate on its behalf."""

import asyncio
import ssl
import stat

import websockets
from conftest import (Gateway, LegacyCharger, NORTH_PASSWORD, PASSWORD, basic_auth, boot, connect_charger, hang_up, run_with,
                      start_csms_and_gateway, wait_for)
from cryptography import x509
from cryptography.x509.oid import NameOID
from ocpp.routing import on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action

PIPELINE = """version: 1
stages:
  - id: identity
    type: auth
  - id: certificates
    type: certs
    config: { cpo_name: "Interop CPO" }
"""

SECURITY_ACTIONS = ("ExtendedTriggerMessage", "SignCertificate", "CertificateSigned", "SecurityEventNotification",
                    "SecurityProfile")


def test_security_profile_2_to_3_migration_is_invisible_to_the_charger(tmp_path, pki, csms_port):
    gateway = Gateway(tmp_path, pki, csms_port, pipeline=PIPELINE, north_profile=2, issue_certificates=False)

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port, verify_mode=ssl.CERT_OPTIONAL)
        charger, connection, task = await connect_charger(gateway)
        await boot(charger)
        # Security Profile 2: TLS with the charger's AuthorizationKey, no client certificate.
        assert csms.authorization_headers == [basic_auth("CP001", NORTH_PASSWORD)["Authorization"]]
        assert csms.client_subjects == [{}]
        await wait_for(lambda: "StartupOfTheDevice" in csms.security_events, what="the startup security event")

        cp = csms.charge_points["CP001"]
        trigger = await cp.call(call.ExtendedTriggerMessage(requested_message="SignChargePointCertificate"))
        assert trigger.status == "Accepted"
        await wait_for(lambda: csms.csrs, what="the CSR")
        csr = x509.load_pem_x509_csr(csms.csrs[0].encode())
        assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "CP001"
        assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Interop CPO"

        signed = await cp.call(call.CertificateSigned(certificate_chain=pki.sign_csr(csms.csrs[0])))
        assert signed.status == "Accepted"
        key_file = gateway.state / "chargers" / "CP001" / "key.pem"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

        upgrade = await cp.call(call.ChangeConfiguration(key="SecurityProfile", value="3"))
        assert upgrade.status == "Accepted"
        # The gateway opens a mutual-TLS link with the new certificate, then retires the old one.
        await wait_for(lambda: len(csms.client_subjects) == 2, what="the profile 3 connection")
        assert csms.client_subjects[1] == {"commonName": "CP001", "organizationName": "Interop CPO"}
        assert csms.authorization_headers[1] is None
        await wait_for(lambda: len(csms.connections) == 1, what="the old link to close")
        await wait_for(lambda: "ReconfigurationOfSecurityParameters" in csms.security_events, what="the reconfiguration event")

        # The charger never noticed: same WebSocket, its next frame arrives on the new link.
        heartbeat = await charger.call(call.Heartbeat())
        assert heartbeat.current_time
        assert csms.charge_points["CP001"] is not cp
        assert any('"Heartbeat"' in frame for frame in csms.frames_from("CP001")[-2:])
        assert connection.state.name == "OPEN"
        assert all(action not in frame for frame in charger.received for action in SECURITY_ACTIONS)
        # The CSMS reads the new profile back.
        configuration = await csms.charge_points["CP001"].call(call.GetConfiguration(key=["SecurityProfile"]))
        assert configuration.configuration_key == [{"key": "SecurityProfile", "readonly": False, "value": "3"}]

        await hang_up(csms, (connection, task))

    try:
        asyncio.run(scenario())
        log = gateway.log()
        assert "PRIVATE KEY" not in log
        assert "north link replaced" in log
    finally:
        gateway.stop()

    # After a restart the charger's link comes up at profile 3 straight away.
    restarted = Gateway(tmp_path, pki, csms_port, pipeline=PIPELINE, north_profile=2, issue_certificates=False)

    async def after_restart():
        csms = await start_csms_and_gateway(restarted, pki, csms_port, verify_mode=ssl.CERT_OPTIONAL)
        charger, connection, task = await connect_charger(restarted)
        await charger.call(call.Heartbeat())
        assert csms.client_subjects == [{"commonName": "CP001", "organizationName": "Interop CPO"}]
        await hang_up(csms, (connection, task))

    try:
        asyncio.run(after_restart())
    finally:
        restarted.stop()


def test_a_downgrade_request_is_refused_and_the_link_stays(tmp_path, pki, csms_port):
    gateway = Gateway(tmp_path, pki, csms_port, pipeline=PIPELINE, north_profile=3)

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_charger(gateway)
        await boot(charger)
        answer = await csms.charge_points["CP001"].call(call.ChangeConfiguration(key="SecurityProfile", value="2"))
        assert answer.status == "Rejected"
        await asyncio.sleep(0.3)
        assert len(csms.client_subjects) == 1
        assert (await charger.call(call.Heartbeat())).current_time
        await hang_up(csms, (connection, task))

    run_with(gateway, scenario)


def test_startup_is_reported_on_an_accepted_boot_not_on_a_reconnect(tmp_path, pki, csms_port):
    """Issue 12.4: field chargers reconnect without a new BootNotification; that is no startup."""
    gateway = Gateway(tmp_path, pki, csms_port, pipeline=PIPELINE, north_profile=3)

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_charger(gateway)
        await charger.call(call.Heartbeat())
        await asyncio.sleep(0.3)
        assert "StartupOfTheDevice" not in csms.security_events, "a connection is not a startup"
        await boot(charger)
        await wait_for(lambda: csms.security_events.count("StartupOfTheDevice") == 1, what="the startup event")
        # Critical: kept on disk until the gateway has the CSMS's acknowledgement (else sent again next session).
        pending = gateway.state / "chargers" / "CP001" / "pending-events.json"
        await wait_for(lambda: not pending.exists(), what="the acknowledged event to leave pending-events.json")
        await connection.close()
        task.cancel()

        charger, connection, task = await connect_charger(gateway)
        assert (await charger.call(call.Heartbeat())).current_time
        await asyncio.sleep(0.3)
        assert csms.security_events.count("StartupOfTheDevice") == 1, "a reconnect without a boot is no startup"
        await boot(charger)
        await wait_for(lambda: csms.security_events.count("StartupOfTheDevice") == 2, what="the second startup event")
        await wait_for(lambda: not pending.exists(), what="acknowledged events to be removed")
        await hang_up(csms, (connection, task))

    run_with(gateway, scenario)


SECRET = "00112233445566778899aabbccddeeff00112233"


class LeakyCharger(LegacyCharger):
    """Field firmware: GetConfiguration answers AuthorizationKey in clear, whatever was asked."""

    @on(Action.get_configuration)
    def on_get_configuration(self, **_):
        return call_result.GetConfiguration(configuration_key=[
            {"key": "HeartbeatInterval", "readonly": False, "value": "300"},
            {"key": "AuthorizationKey", "readonly": False, "value": SECRET},
        ])


def test_the_chargers_authorization_key_never_reaches_the_csms(tmp_path, pki, csms_port):
    """Issue 20.4: every form of GetConfiguration."""
    gateway = Gateway(tmp_path, pki, csms_port, pipeline=PIPELINE, north_profile=3)

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        connection = await websockets.connect(
            f"ws://127.0.0.1:{gateway.south_port}/ocpp/CP001", subprotocols=["ocpp1.6"],
            additional_headers=basic_auth("CP001", PASSWORD), open_timeout=10)
        charger = LeakyCharger("CP001", connection)
        task = asyncio.create_task(charger.start())
        await boot(charger)
        cp = csms.charge_points["CP001"]
        for keys in (None, ["AuthorizationKey"], ["authorizationkey"], ["HeartbeatInterval", "AuthorizationKey"],
                     ["HeartbeatInterval", "AUTHORIZATIONKEY"], ["HeartbeatInterval"]):
            answer = await cp.call(call.GetConfiguration(key=keys))
            names = [entry["key"].lower() for entry in answer.configuration_key or []]
            assert "authorizationkey" not in names, keys
        assert all(SECRET not in frame for frame in csms.frames_from("CP001"))
        await hang_up(csms, (connection, task))

    run_with(gateway, scenario)
    assert SECRET not in gateway.log()
