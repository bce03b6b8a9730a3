"""The command line's stable interface: validate, stages, hash-password."""

import asyncio
import subprocess

import pytest
import websockets
from conftest import GATEWAY_BIN, Gateway, PASSWORD, basic_auth, boot, connect_charger, run_with, start_csms_and_gateway


def run(*args, stdin=None):
    return subprocess.run([str(GATEWAY_BIN), *args], input=stdin, capture_output=True, text=True, timeout=60)


def test_validate_accepts_a_good_configuration(tmp_path, pki, csms_port):
    gateway = Gateway(tmp_path, pki, csms_port)
    result = run("validate", "--config", str(gateway.config))
    assert result.returncode == 0, result.stderr
    assert "1 stage: identity (auth)" in result.stdout


def test_validate_reports_every_problem_with_its_position_and_exits_78(tmp_path, pki, csms_port):
    gateway = Gateway(tmp_path, pki, csms_port, pipeline="""version: 1
stages:
  - id: identity
    type: auht
  - id: second
    type: auth
    config:
      key_fil: "x"
""")
    result = run("validate", "--config", str(gateway.config))
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"{gateway.pipeline_file}:4:11: error: unknown stage type 'auht' (did you mean 'auth'?); registered: auth, certs, compressor, dashcam, ids, mqtt_tap, nap_export, outbox, smart_charging",
        f"{gateway.pipeline_file}:8:7: error: stage 'second' (auth): unknown config key 'key_fil' (did you mean 'key_file'?); "
        "valid keys: allow_unlisted, certificate_file, key_file",
    ]


def test_validate_reports_gateway_yaml_mistakes(tmp_path, pki, csms_port):
    gateway = Gateway(tmp_path, pki, csms_port)
    gateway.config.write_text(gateway.config.read_text().replace("security_profile: 3", "security_profil: 3"))
    result = run("validate", "--config", str(gateway.config))
    assert result.returncode == 78
    assert f"{gateway.config}:" in result.stderr
    assert "unknown config key 'security_profil' (did you mean 'security_profile'?)" in result.stderr
    assert "missing required key 'security_profile'" in result.stderr


def test_stages_lists_registered_types():
    result = run("stages")
    assert result.returncode == 0
    assert result.stdout.startswith("auth ")
    assert "\ncerts " in result.stdout and "\nids " in result.stdout


def test_a_hashed_password_lets_the_charger_in(tmp_path, pki, csms_port):
    hashed = run("hash-password", stdin=PASSWORD + "\n")
    assert hashed.returncode == 0 and hashed.stdout.startswith("pbkdf2-sha256$210000$")
    assert PASSWORD not in hashed.stdout
    gateway = Gateway(tmp_path, pki, csms_port)
    gateway.config.write_text(
        gateway.config.read_text().replace(f'password: "{PASSWORD}"', f'password_hash: "{hashed.stdout.strip()}"')
    )

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_charger(gateway)
        boot_answer = await boot(charger)
        assert boot_answer.status == "Accepted"
        await connection.close()
        task.cancel()
        with pytest.raises(websockets.exceptions.InvalidStatus):
            await connect_charger(gateway, password="wrong")
        csms.server.close()

    try:
        asyncio.run(scenario())
        assert "plain 'password'" not in gateway.log()
    finally:
        gateway.stop()


def test_certs_commands_enrol_a_charger_by_hand(tmp_path, pki, csms_port):
    gateway = Gateway(tmp_path, pki, csms_port, chargers=("CP001", "CP002"), issue_certificates=False)
    pki.issue_charger(gateway.state, "CP001")
    csr = run("certs", "csr", "CP002", "--config", str(gateway.config), "--cpo-name", "Interop CPO")
    assert csr.returncode == 0 and csr.stdout.startswith("-----BEGIN CERTIFICATE REQUEST-----")
    key = gateway.state / "chargers" / "CP002" / "pending-key.pem"
    assert oct(key.stat().st_mode & 0o777) == "0o600"

    foreign = tmp_path / "foreign.pem"
    foreign.write_text((gateway.state / "chargers" / "CP001" / "cert.pem").read_text())
    refused = run("certs", "import", "CP002", "--config", str(gateway.config), "--cert", str(foreign))
    assert refused.returncode != 0 and "does not match" in refused.stderr

    signed = tmp_path / "signed.pem"
    signed.write_text(pki.sign_csr(csr.stdout))
    imported = run("certs", "import", "CP002", "--config", str(gateway.config), "--cert", str(signed))
    assert imported.returncode == 0, imported.stderr
    listing = run("certs", "list", "--config", str(gateway.config)).stdout.splitlines()
    assert listing[0].split("\t")[:5] == ["CHARGER", "PROFILE", "KEY", "NOT AFTER", "DAYS LEFT"]
    rows = {line.split("\t")[0]: line.split("\t") for line in listing[1:]}
    assert rows["CP002"][1:3] == ["SP3", "EC P-256"] and rows["CP002"][4] in ("29", "30")
    assert "CN=CP002" in rows["CP002"][5]
    roots = run("certs", "roots", "--config", str(gateway.config)).stdout
    assert "CentralSystemRootCertificate\tnorth.ca_file" in roots


def test_validate_never_prints_a_password(tmp_path, pki, csms_port):
    """A charger written as `id: "<password>"`, or a password with a control character, is reported
    at its position without the password; charger ids are shown as written (issue 12.13)."""
    gateway = Gateway(tmp_path, pki, csms_port)
    text = gateway.config.read_text()
    gateway.config.write_text(text.replace("  chargers:\n", '  chargers:\n    CP0000: "s3cret-in-place"\n'))
    result = run("validate", "--config", str(gateway.config))
    assert result.returncode == 78
    assert "s3cret-in-place" not in result.stderr + result.stdout
    assert f"{gateway.config}:6:13: error: 'CP0000' should be a mapping" in result.stderr, result.stderr
    assert "c_p0000" not in result.stderr

    gateway.config.write_text(text.replace("  chargers:\n", '  chargers:\n    CP0000: { password: "s3cret\x07bell" }\n'))
    result = run("validate", "--config", str(gateway.config))
    assert result.returncode == 78
    assert "s3cret" not in result.stderr + result.stdout
    assert f"{gateway.config}:6:" in result.stderr and "invalid YAML" in result.stderr, result.stderr


def test_refused_credentials_are_not_logged(tmp_path, pki, csms_port):
    """A charger that sends its password as the Basic auth user name is refused without the
    name (its password) appearing in the log (issue 12.13)."""
    gateway = Gateway(tmp_path, pki, csms_port)

    async def scenario():
        gateway.start()
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            await websockets.connect(
                f"ws://127.0.0.1:{gateway.south_port}/ocpp/CP001",
                subprotocols=["ocpp1.6"],
                additional_headers=basic_auth("swapped-s3cret", "CP001"),
                open_timeout=10,
            )
        assert refused.value.response.status_code == 401

    run_with(gateway, scenario)
    log = gateway.log()
    assert "is not the charge point id" in log
    assert "swapped-s3cret" not in log


def test_a_refused_uri_is_logged_without_its_query(tmp_path, pki, csms_port):
    gateway = Gateway(tmp_path, pki, csms_port)

    async def scenario():
        gateway.start()
        with pytest.raises(websockets.exceptions.InvalidStatus):
            await websockets.connect(
                f"ws://127.0.0.1:{gateway.south_port}/wrong/CP001?password=query-s3cret",
                subprotocols=["ocpp1.6"],
                additional_headers=basic_auth("CP001", PASSWORD),
                open_timeout=10,
            )

    run_with(gateway, scenario)
    log = gateway.log()
    assert "upgrade refused" in log
    assert "query-s3cret" not in log
