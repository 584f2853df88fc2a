"""A real Prometheus for the tests: Debian's `prometheus` binary on a loopback port, with a generated
config and a temporary storage directory (scripts/install-services.sh installs it)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from serve.local_redis import free_port, stop_process

INSTALL_HINT = ("prometheus not found: the tests need a real Prometheus. Install it with `make services` "
                "(or `sudo apt-get install prometheus`), then run the tests again.")


def find_prometheus() -> str | None:
    return shutil.which("prometheus")


class PrometheusProcess:
    """``prometheus`` scraping ``scrape_configs`` every second, on 127.0.0.1:`port`."""

    def __init__(self, binary: str, directory: Path, scrape_configs: list[dict[str, Any]]) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                       "scrape_configs": scrape_configs}
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> None:
        config = self.directory / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config))
        log = (self.directory / "prometheus.log").open("wb")
        self._process = subprocess.Popen(
            [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(self.directory / 'prometheus.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus was not ready within {timeout_s}s")

    def query(self, promql: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5.0).json()
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process, grace_s=20)
            self._process = None
