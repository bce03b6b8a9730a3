"""`make install` and `make deb`, without touching the machine: install into a temporary DESTDIR and check the
tree, the file modes and the unit (`systemd-analyze verify` and `security`); build the .deb, install it into a
test root with dpkg (maintainer scripts honour DPKG_ROOT) and run `ocpp-gateway validate` from it.

The test packages the binary under test (the debug build, OCPP_GATEWAY_BIN): `make install` and `make deb` build
the release binary with the Swift runtime linked statically, which takes minutes; what is checked here (paths,
modes, unit, package metadata, maintainer scripts, conffiles) does not depend on which build is packaged. For the
same reason the package is built uncompressed (DEB_COMPRESS=none) and allowed to link the Swift runtime from
/opt (DEB_ALLOW_UNPACKAGED_LIBS=1, which `make deb` refuses)."""

import gzip
import hashlib
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import GATEWAY_BIN, REPO

SHIPPED_PIPELINES = sorted(p.name for p in (REPO / "pipelines").glob("*.yaml"))


def make(*args, env=None):
    result = subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, f"make {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def manpage():
    """The man page from swift-argument-parser's generate-manual plugin (`make man`)."""
    make("man")
    page = REPO / ".build" / "plugins" / "GenerateManual" / "outputs" / "ocpp-gateway" / "ocpp-gateway.1"
    assert page.stat().st_size > 0
    return page


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def unit_settings(text: str) -> dict:
    settings = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def install(destdir: Path, manpage: Path, *extra):
    return make("install-files", f"DESTDIR={destdir}", f"INSTALL_BIN={GATEWAY_BIN}", f"MANPAGE={manpage}", *extra)


def test_make_install_puts_every_file_in_place_with_its_mode(tmp_path, manpage):
    root = tmp_path / "root"
    install(root, manpage)
    prefix = root / "usr" / "local"
    etc = root / "etc" / "ocpp-gateway"
    expected = {
        prefix / "bin" / "ocpp-gateway": 0o755,
        prefix / "lib" / "systemd" / "system" / "ocpp-gateway.service": 0o644,
        root / "etc" / "sysusers.d" / "ocpp-gateway.conf": 0o644,
        prefix / "share" / "man" / "man1" / "ocpp-gateway.1.gz": 0o644,
        prefix / "share" / "doc" / "ocpp-gateway" / "install.md": 0o644,
        prefix / "share" / "doc" / "ocpp-gateway" / "configuration.md": 0o644,
        etc: 0o750,
        etc / "pipelines": 0o750,
        etc / "gateway.yaml": 0o640,
        **{etc / "pipelines" / name: 0o640 for name in SHIPPED_PIPELINES},
    }
    for path, wanted in expected.items():
        assert path.exists(), f"{path.relative_to(root)} installed"
        assert mode(path) == wanted, f"{path.relative_to(root)}: {oct(mode(path))}, wanted {oct(wanted)}"
    # Nothing under /etc/ocpp-gateway is readable by others: it holds password hashes.
    for path in etc.rglob("*"):
        assert not mode(path) & 0o007, f"{path} is world-accessible"
    assert (etc / "gateway.yaml").read_bytes() == (REPO / "docs" / "deploy" / "gateway.yaml").read_bytes()
    for name in SHIPPED_PIPELINES:
        assert (etc / "pipelines" / name).read_bytes() == (REPO / "pipelines" / name).read_bytes()

    unit = (prefix / "lib" / "systemd" / "system" / "ocpp-gateway.service").read_text()
    assert not re.search(r"@[A-Z]+@", unit), "every placeholder replaced"
    assert "ExecStart=/usr/local/bin/ocpp-gateway run --config /etc/ocpp-gateway/gateway.yaml" in unit

    page = gzip.decompress((prefix / "share" / "man" / "man1" / "ocpp-gateway.1.gz").read_bytes()).decode()
    assert ".Dt OCPP-GATEWAY 1" in page
    for option in ("validate", "hash-password", "log-format", "log-level"):
        assert option in page, f"the man page documents {option}"

    # A second install keeps what the operator changed.
    (etc / "gateway.yaml").write_text("# the operator's own\n")
    (etc / "pipelines" / "site.yaml").write_text("# tuned\n")
    output = install(root, manpage)
    assert (etc / "gateway.yaml").read_text() == "# the operator's own\n"
    assert (etc / "pipelines" / "site.yaml").read_text() == "# tuned\n"
    assert "keeping" in output and "gateway.yaml" in output


def test_the_systemd_unit_is_hardened_and_verifies(tmp_path, manpage):
    root = tmp_path / "root"
    install(root, manpage, "PREFIX=/usr", "UNITDIR=/lib/systemd/system")
    unit_file = root / "lib" / "systemd" / "system" / "ocpp-gateway.service"
    settings = unit_settings(unit_file.read_text())
    required = {
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "StateDirectory": "ocpp-gateway",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "User": "ocpp-gateway",
        "RestartPreventExitStatus": "78",
    }
    for key, value in required.items():
        assert settings.get(key) == [value], f"{key}={value} (found {settings.get(key)})"
    assert "DynamicUser" not in settings, "a static user from sysusers.d, shared with the CLI"
    # No capability, so every port the example configuration listens on must be unprivileged.
    example = (REPO / "docs" / "deploy" / "gateway.yaml").read_text()
    ports = [int(p) for p in re.findall(r'listen:\s*"[^"]*:(\d+)"', example)]
    assert ports and all(port >= 1024 for port in ports), ports

    # systemd-analyze verify needs the ExecStart binary to exist: point a copy of the unit at the DESTDIR.
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing (APT_PACKAGES has systemd)"
    check = tmp_path / "verify" / "ocpp-gateway.service"
    check.parent.mkdir()
    check.write_text(unit_file.read_text().replace("ExecStart=/usr/bin/", f"ExecStart={root}/usr/bin/"))
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no", str(check)], capture_output=True, text=True)
    assert verify.returncode == 0 and not verify.stderr.strip() and not verify.stdout.strip(), verify.stderr + verify.stdout
    security = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(check)],
                              capture_output=True, text=True)
    level = re.search(r"Overall exposure level for ocpp-gateway.service: ([\d.]+)", security.stdout)
    assert level, security.stdout + security.stderr
    assert float(level.group(1)) <= 2.0, f"exposure {level.group(1)}:\n{security.stdout}"

    # The sysusers.d line makes the user (in a scratch root, not on this machine).
    sysroot = tmp_path / "sysroot"
    (sysroot / "etc").mkdir(parents=True)
    users = subprocess.run(["systemd-sysusers", f"--root={sysroot}", str(root / "etc" / "sysusers.d" / "ocpp-gateway.conf")],
                           capture_output=True, text=True)
    assert users.returncode == 0, users.stderr
    assert re.search(r"^ocpp-gateway:x:\d+:\d+:OCPP gateway:/var/lib/ocpp-gateway:/usr/sbin/nologin$",
                     (sysroot / "etc" / "passwd").read_text(), re.MULTILINE)


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if Path(path).exists() else None


@pytest.mark.skipif(os.geteuid() != 0, reason="dpkg --root with the maintainer scripts needs root (chgrp to the new group)")
def test_the_debian_package_installs_into_a_test_root_and_validates(tmp_path, manpage):
    out = tmp_path / "out"
    built = make("deb-package", f"INSTALL_BIN={GATEWAY_BIN}", f"MANPAGE={manpage}", f"DEB_ROOT={tmp_path / 'pkgroot'}",
                 f"DEB_OUT={out}", "VERSION=0.0.0+test", env={"DEB_COMPRESS": "none", "DEB_ALLOW_UNPACKAGED_LIBS": "1"})
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    deb = out / f"ocpp-gateway_0.0.0+test_{arch}.deb"
    assert deb.exists() and str(deb) in built

    def field(name):
        return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True).stdout.strip()

    assert field("Package") == "ocpp-gateway" and field("Version") == "0.0.0+test" and field("Architecture") == arch
    depends = {d.strip() for d in field("Depends").split(",")}
    assert {"libc6", "libsqlite3-0", "libmosquitto1"} <= depends, depends
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True).stdout.splitlines()
    assert listing and all(" root/root " in line for line in listing), "dpkg-deb --root-owner-group"
    paths = {line.split()[-1].lstrip(".") for line in listing}
    for path in ("/usr/bin/ocpp-gateway", "/lib/systemd/system/ocpp-gateway.service", "/usr/lib/sysusers.d/ocpp-gateway.conf",
                 "/usr/share/man/man1/ocpp-gateway.1.gz", "/etc/ocpp-gateway/gateway.yaml"):
        assert path in paths, path
    control = tmp_path / "control"
    subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=True)
    conffiles = (control / "conffiles").read_text().split()
    assert sorted(conffiles) == sorted(["/etc/ocpp-gateway/gateway.yaml"] + [f"/etc/ocpp-gateway/pipelines/{n}" for n in SHIPPED_PIPELINES])
    for script in ("postinst", "prerm", "postrm"):
        assert mode(control / script) == 0o755
        subprocess.run(["sh", "-n", str(control / script)], check=True)

    # Install into a test root: dpkg runs the maintainer scripts outside a chroot with DPKG_ROOT set, and they
    # must act only under it. This machine's user database and /var/lib stay as they were.
    root = tmp_path / "testroot"
    (root / "var" / "lib" / "dpkg" / "info").mkdir(parents=True)
    (root / "var" / "lib" / "dpkg" / "updates").mkdir()
    (root / "var" / "lib" / "dpkg" / "status").touch()
    host_before = (digest("/etc/passwd"), digest("/etc/group"), Path("/var/lib/ocpp-gateway").exists())
    dpkg = ["dpkg", f"--root={root}", "--force-script-chrootless", "--force-depends"]

    def dpkg_run(*args):
        result = subprocess.run([*dpkg, *args], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    dpkg_run("-i", str(deb))
    status = subprocess.run(["dpkg", f"--root={root}", "-s", "ocpp-gateway"], capture_output=True, text=True).stdout
    assert "Status: install ok installed" in status
    user = re.search(r"^ocpp-gateway:x:(\d+):(\d+):", (root / "etc" / "passwd").read_text(), re.MULTILINE)
    assert user, "postinst made the user in the test root"
    uid, gid = int(user.group(1)), int(user.group(2))
    etc = root / "etc" / "ocpp-gateway"
    assert (etc.stat().st_gid, mode(etc)) == (gid, 0o750)
    assert ((etc / "gateway.yaml").stat().st_gid, mode(etc / "gateway.yaml")) == (gid, 0o640)
    state = root / "var" / "lib" / "ocpp-gateway"
    assert (state.stat().st_uid, state.stat().st_gid, mode(state)) == (uid, gid, 0o700)
    assert mode(root / "usr" / "bin" / "ocpp-gateway") == 0o755

    validate = subprocess.run([str(root / "usr" / "bin" / "ocpp-gateway"), "validate", "--config", str(etc / "gateway.yaml")],
                              capture_output=True, text=True)
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert f"{etc}/pipelines/default.yaml: ok: 3 stages" in validate.stdout

    # An upgrade (the same package again) keeps the operator's edit of a conffile.
    with open(etc / "gateway.yaml", "a") as config:
        config.write("# the operator's note\n")
    dpkg_run("-i", str(deb))
    assert (etc / "gateway.yaml").read_text().endswith("# the operator's note\n")
    assert not list(etc.glob("*.dpkg-*"))

    # Purge removes the state under the test root.
    dpkg_run("--purge", "ocpp-gateway")
    assert not state.exists() and not (root / "usr" / "bin" / "ocpp-gateway").exists()
    assert (digest("/etc/passwd"), digest("/etc/group"), Path("/var/lib/ocpp-gateway").exists()) == host_before
