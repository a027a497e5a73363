"""A real S3 API for tests: the moto server in a subprocess on a free loopback port.

Registered as a pytest plugin from conftest.py. One server per test process, started on first use
(``shared_server()``, also for code that is not a fixture, such as the conformance suite's backend
factories) and stopped when the session ends. Fixtures:

- ``s3_server``: the server's endpoint URL.
- ``s3_env``: the standard AWS environment pointed at that server (what a user's own
  configuration would hold), with fsspec's cached S3 clients dropped so they pick it up.
- ``s3_bucket``: ``s3_env`` plus a fresh, empty bucket; the value is ``"s3://<bucket>"``.

Everything skips when ``moto`` or ``s3fs`` is not installed (both are dev dependencies).
"""

from __future__ import annotations

import atexit
import itertools
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

_buckets = itertools.count()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_serving(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=2).close()
            return True
        except urllib.error.HTTPError:
            return True  # it answers
        except OSError:
            time.sleep(0.1)
    return False


def start_moto_server() -> tuple[subprocess.Popen, str]:
    """Start ``python -m moto.server`` on 127.0.0.1 at a free port; returns (process, endpoint URL)."""
    for _ in range(5):  # the port was free a moment ago; another process may take it first
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        if _wait_until_serving(url, proc):
            return proc, url
        proc.kill()
        proc.wait()
    raise RuntimeError("could not start the moto S3 server (python -m moto.server)")


def aws_environment(endpoint: str) -> dict[str, str]:
    """The environment variables a user would set to reach ``endpoint`` with dummy credentials."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


_shared: list[tuple[subprocess.Popen, str]] = []


def _stop_shared() -> None:
    while _shared:
        proc, _ = _shared.pop()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def shared_server() -> str:
    """The endpoint of this process's moto server, started on first use; skips without moto or s3fs."""
    pytest.importorskip("moto.server", reason="moto[server] is a dev dependency: pip install -e '.[dev]'")
    pytest.importorskip("s3fs", reason="s3fs is a dev dependency: pip install -e '.[dev]'")
    if not _shared:
        _shared.append(start_moto_server())
        atexit.register(_stop_shared)
    return _shared[0][1]


def fresh_bucket_options() -> tuple[str, dict]:
    """``("s3://<new empty bucket>", storage_options)`` on the shared server, configured through
    ``storage_options`` alone (no environment variables), as fsspec spells them for s3fs."""
    import s3fs

    options = {"endpoint_url": shared_server(), "key": "testing", "secret": "testing"}
    name = f"ember-test-{os.getpid()}-{next(_buckets)}"
    s3fs.S3FileSystem(**options).mkdir(name)
    return f"s3://{name}", options


def pytest_sessionfinish(session, exitstatus):
    _stop_shared()


@pytest.fixture(scope="session")
def s3_server():
    return shared_server()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    import s3fs

    for key, value in aws_environment(s3_server).items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    s3fs.S3FileSystem.clear_instance_cache()
    yield s3_server
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def s3_bucket(s3_env):
    """A fresh empty bucket on the test server: ``"s3://<name>"``."""
    import s3fs

    name = f"ember-test-{os.getpid()}-{next(_buckets)}"
    s3fs.S3FileSystem().mkdir(name)
    return f"s3://{name}"
