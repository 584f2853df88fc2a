"""Shared fixtures: a real redis-server for the session, which a test may stop and restart."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

_INSTALL_HINT = (
    "redis-server not found: the tests need a real Redis. Install it with `make services` "
    "(or `sudo apt-get install redis-server`), then run the tests again."
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _find_redis_server() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    for candidate in ("/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server"):
        if Path(candidate).is_file():
            return candidate
    return None


class RedisServer:
    """A redis-server subprocess on a fixed port, with no persistence, that can go down and up."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client(self) -> redis.Redis:
        """A synchronous client, for test setup and for looking at what the code under test wrote."""
        return redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)

    def start(self, timeout_s: float = 10.0) -> None:
        """Start (or restart, on the same port) and wait until it answers PING."""
        if self.running:
            return
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        with (self.workdir / "redis.log").open("ab") as log:
            self._proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited at start; see {self.workdir / 'redis.log'}")
            try:
                with self.client() as client:
                    client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer PING within {timeout_s} s")

    def stop(self) -> None:
        """Stop it, as an outage would: clients see refused connections until `start`."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    @contextmanager
    def hung(self) -> Iterator[None]:
        """Redis accepts connections but never answers inside the block (SIGSTOP), then resumes."""
        assert self._proc is not None, "start the server first"
        self._proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self._proc.send_signal(signal.SIGCONT)

    @contextmanager
    def down(self) -> Iterator[None]:
        """Redis is stopped inside the block and running again after it, even if the test fails."""
        self.stop()
        try:
            yield
        finally:
            self.start()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = _find_redis_server()
    if binary is None:
        pytest.fail(_INSTALL_HINT, pytrace=False)
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The running server's URL, with an empty database for this test."""
    redis_server.start()  # a test that stopped it and failed may have left it down
    with redis_server.client() as client:
        client.flushall()
    return redis_server.url


# -- the local Serve application, shared by every integration test of the session -------------

CANDIDATE_VERSION = "wan-candidate"


@dataclass(frozen=True)
class LocalApp:
    """The running app: its base URL and how it was configured."""

    url: str
    stable_version: str
    candidate_version: str
    api_keys_file: str


@pytest.fixture(scope="session")
def tiny_candidate_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny checkpoint with other weights: a model version a rollout can move to."""
    from serve.pipeline.tiny_checkpoint import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("candidate"), seed=1)


@pytest.fixture(scope="session")
def local_app(
    redis_server: RedisServer, tiny_candidate_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalApp]:
    """Real Ray Serve on this machine with real Redis: stable + candidate versions, primary + backup.

    Serve takes seconds to start on 2 cores, so the session shares one app; tests that change the
    policy restore it.
    """
    from serve.app import local
    from serve.app.args import AppArgs, LaneArgs, ModelVersion

    args = AppArgs(
        redis_url=redis_server.url,
        candidate=ModelVersion(name=CANDIDATE_VERSION, model_dir=str(tiny_candidate_dir)),
        backup_instance=True,
        allow_fault_injection=True,
        cache_ttl_seconds=600,
        lanes=LaneArgs(capacity=1, realtime_queue=8, batch_queue=12, batch_max_size=4, batch_wait_s=0.5),
        # Absent = open mode; tests/app/test_tenancy*.py write keys here and remove them (the ingress
        # re-reads the file within a second), so one app serves open and multi-tenant tests.
        api_keys_file=str(tmp_path_factory.mktemp("tenancy") / "api-keys.yaml"),
    )
    url = local.start(args, port=_free_port(), num_cpus=2)
    _wait_ready(url)
    assert args.api_keys_file is not None
    yield LocalApp(url=url, stable_version=args.model_version, candidate_version=CANDIDATE_VERSION,
                   api_keys_file=args.api_keys_file)
    local.stop()


def _wait_ready(url: str, timeout_s: float = 180.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/readyz", timeout=10)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.HTTPError as error:
            last = repr(error)
        time.sleep(0.5)
    raise RuntimeError(f"the local app at {url} did not become ready in {timeout_s}s: {last}")
