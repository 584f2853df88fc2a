"""Shared fixtures: a real redis-server for the session, which a test may stop and restart."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from serve.local_redis import RedisProcess, find_redis_server, free_port
from tests.s3_support import LocalS3

_INSTALL_HINT = (
    "redis-server not found: the tests need a real Redis. Install it with `make services` "
    "(or `sudo apt-get install redis-server`), then run the tests again."
)


# The tests' Redis is the project's local one; the alias keeps the fixtures' type readable.
RedisServer = RedisProcess


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = find_redis_server()
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


# Quotas no test reaches unless it means to (each quota test sets its own tenant's).
ROOMY_QUOTAS = {"requests_per_minute": 100_000, "max_concurrent_jobs": 1_000, "daily_compute_units": 1e9,
                "max_storage_bytes": 2**40}


@dataclass(frozen=True)
class LocalApp:
    """The running app: its base URL and how it was configured.

    It runs keyed, as a cluster does: ``key`` belongs to the tenant ``tests`` (an admin tenant: it
    may also read /metrics and steer the policy), ``admin_key`` is the app's admin key.
    """

    url: str
    stable_version: str
    candidate_version: str
    api_keys_file: str
    key: str
    admin_key: str

    def keys_file_with(self, tenants: dict[str, dict[str, object]]) -> str:
        """The keys file's text with ``tenants`` added to the session's own tenant."""
        return keys_file_text({**tenants, "tests": self._tests_tenant()})

    def _tests_tenant(self) -> dict[str, object]:
        return {"admin": True, "shared_cache_opt_in": True, "quotas": ROOMY_QUOTAS, "key_hashes": [self.key_hash]}

    @property
    def key_hash(self) -> str:
        return _KEY_HASHES[self.key]


_KEY_HASHES: dict[str, str] = {}


def keys_file_text(tenants: dict[str, dict[str, object]]) -> str:
    import yaml

    return yaml.safe_dump({"version": 1, "tenants": tenants}, sort_keys=False)


@pytest.fixture(scope="session")
def tiny_candidate_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny checkpoint with other weights: a model version a rollout can move to."""
    from serve.pipeline.tiny_checkpoint import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("candidate"), seed=1)


@pytest.fixture(scope="session")
def local_app(
    redis_server: RedisServer, tiny_candidate_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalApp]:
    """Real Ray Serve on this machine with real Redis: stable (primary + backup) and candidate versions,
    each (version, instance) its own stage application.

    Serve takes seconds to start on 2 cores, so the session shares one app; tests that change the
    policy restore it.
    """
    from serve.app import local
    from serve.app.args import AppArgs, LaneArgs, ModelVersion
    from serve.tenancy import TenantQuotas, generate_key, hash_key

    key, admin_key = generate_key(), generate_key()
    _KEY_HASHES[key] = hash_key(key)
    keys_path = tmp_path_factory.mktemp("tenancy") / "api-keys.yaml"
    keys_path.write_text(keys_file_text({"tests": {"admin": True, "shared_cache_opt_in": True,
                                                   "quotas": ROOMY_QUOTAS, "key_hashes": [_KEY_HASHES[key]]}}))
    args = AppArgs(
        redis_url=redis_server.url,
        candidate=ModelVersion(name=CANDIDATE_VERSION, model_dir=str(tiny_candidate_dir)),
        backup_instance=True,
        allow_fault_injection=True,
        cache_ttl_seconds=600,
        # One tenant may fill a lane here: the fairness tests flood it (the share cap is unit-tested).
        lanes=LaneArgs(capacity=1, realtime_queue=8, batch_queue=12, batch_max_size=4, batch_wait_s=0.5,
                       tenant_queue_share=1.0),
        # Keyed, as on a cluster; tests/app/test_tenancy.py adds tenants here and puts the file back (the
        # ingress re-reads it within a second).
        api_keys_file=str(keys_path),
        admin_key=admin_key,
        default_quotas=TenantQuotas(**ROOMY_QUOTAS),  # type: ignore[arg-type]
    )
    url = local.start(args, port=free_port(), num_cpus=2)
    # Three stage applications of three replicas each start at once on two shared cores: be patient.
    local.wait_ready(url, timeout_s=600)
    assert args.api_keys_file is not None
    yield LocalApp(url=url, stable_version=args.model_version, candidate_version=CANDIDATE_VERSION,
                   api_keys_file=args.api_keys_file, key=key, admin_key=admin_key)
    local.stop()


# -- a local S3-compatible store (moto's server) for the artifact tests ---------------------------


@pytest.fixture(scope="session")
def local_s3() -> Iterator[LocalS3]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = LocalS3()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3(local_s3: LocalS3) -> LocalS3:
    """The running local S3 (restarted if a test that stopped it failed)."""
    local_s3.start()
    return local_s3
