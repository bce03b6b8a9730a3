"""The migration an operator performs: a legacy charger goes from Security Profile 2 to 3 without
noticing, while the gateway enrols a key pair and certificate on its behalf."""

import asyncio
import ssl
import stat

from conftest import Gateway, NORTH_PASSWORD, basic_auth, boot, connect_charger, hang_up, run_with, start_csms_and_gateway, wait_for
from cryptography import x509
from cryptography.x509.oid import NameOID
from ocpp.v16 import call

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
