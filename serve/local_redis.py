"""A redis-server subprocess on loopback, for the tests, the benchmarks and the drills.

It can be stopped and started again on the same port (an outage), or frozen (a hung Redis).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

INSTALL_HINT = "redis-server is not installed: run `make services` (or `sudo apt-get install redis-server`)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it is still running after ``grace_s``; returns once it has exited."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def find_redis_server() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    for candidate in ("/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server"):
        if Path(candidate).is_file():
            return candidate
    return None


class RedisProcess:
    """redis-server on a free loopback port, writing into ``workdir``.

    ``persistent`` keeps an append-only file, so a stop and start keeps the data as a production
    Redis would; otherwise a restart comes back empty. ``password`` starts it with
    ``--requirepass`` as the chart's Redis runs (``url`` then carries no password, as the chart's
    app args don't); ``extra_args`` are more redis-server flags (``--maxmemory`` ...).
    """

    def __init__(
        self,
        binary: str,
        workdir: Path,
        persistent: bool = False,
        *,
        password: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.persistent = persistent
        self.password = password
        self.extra_args = extra_args
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client(self) -> redis.Redis:
        """A synchronous client, for setting up and for looking at what the code under test wrote."""
        return redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1, password=self.password)

    def start(self, timeout_s: float = 10.0) -> None:
        """Start (or restart, on the same port) and wait until it answers PING."""
        if self.running:
            return
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "yes" if self.persistent else "no", "--dir", str(self.workdir),
                   *(["--requirepass", self.password] if self.password else []), *self.extra_args]
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
        stop_process(self._proc, grace_s=5)
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
        """Redis is stopped inside the block and running again after it, even if the block fails."""
        self.stop()
        try:
            yield
        finally:
            self.start()
