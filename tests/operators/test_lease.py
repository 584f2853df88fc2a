"""One controller per policy: the Lease rules (a table) and the Lease writes against kmock's emulator.

kmock's emulator does not check resourceVersion, so the race two operators lose is played by a
reaction that answers 409 Conflict, as a real API server answers the writer whose resourceVersion is
stale; the tests check that every write carries the resourceVersion it read.
"""

from __future__ import annotations

from pathlib import Path

import kmock
import kubernetes.client
import kubernetes.config
import pytest
import yaml

from operators.kube.connection import KubeConnection
from operators.kube.lease import LeaseKeeper, LeaseView, claim, lease_name, lease_seconds, micro_time, view_of

NS = "wan"
LEASES = "coordination.k8s.io/v1/leases"


@pytest.mark.parametrize(("lease", "now", "expected"), [
    (None, 100.0, "create"),
    (LeaseView("me", 90.0, 30, "7"), 100.0, "renew"),
    (LeaseView("me", 0.0, 30, "7"), 100.0, "renew"),  # our own, however old
    (LeaseView("other", 90.0, 30, "7"), 100.0, "wait"),
    (LeaseView("other", 70.0, 30, "7"), 100.0, "wait"),  # exactly the duration: still theirs
    (LeaseView("other", 69.0, 30, "7"), 100.0, "take"),  # expired
    (LeaseView(None, 99.0, 30, "7"), 100.0, "take"),  # released
    (LeaseView("other", None, 30, "7"), 100.0, "take"),  # never renewed
])
def test_who_may_hold_the_lease(lease: LeaseView | None, now: float, expected: str) -> None:
    assert claim(lease, "me", now) == expected


def test_lease_duration_covers_three_intervals_and_at_least_fifteen_seconds() -> None:
    assert (lease_seconds(1), lease_seconds(10), lease_seconds(15.5)) == (15, 30, 47)


def test_a_lease_reads_back_as_it_was_written() -> None:
    lease = {"metadata": {"resourceVersion": "42"},
             "spec": {"holderIdentity": "pod-a", "renewTime": micro_time(1_700_000_000.25),
                      "leaseDurationSeconds": 30, "leaseTransitions": 2}}
    assert view_of(lease) == LeaseView("pod-a", 1_700_000_000.25, 30.0, "42", 2)


@pytest.fixture
def connection(kmock: kmock.KubernetesEmulator, tmp_path: Path) -> KubeConnection:
    kmock.resources[LEASES] = kmock.ResourceInfo(kind="Lease", namespaced=True,
                                                 verbs={"get", "create", "update", "list", "watch"})
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": str(kmock.url).rstrip("/")}}],
        "users": [{"name": "operator", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "operator"}}],
    }
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(tmp_path / "kubeconfig"), client_configuration=configuration)
    return KubeConnection(configuration)


def stored(emulator: kmock.KubernetesEmulator, name: str) -> dict:  # type: ignore[type-arg]
    return dict(emulator.objects[kmock.resource(LEASES), NS, name])


def writes(emulator: kmock.KubernetesEmulator) -> list[kmock.Request]:
    return [r for r in list(emulator) if r.resource == kmock.resource(LEASES) and r.method != kmock.method.GET]


@pytest.mark.asyncio(loop_scope="session")
async def test_the_first_operator_creates_the_lease_and_renews_it(
    kmock: kmock.KubernetesEmulator, connection: KubeConnection
) -> None:
    keeper = LeaseKeeper(connection, "pod-a")
    assert await keeper.hold(NS, lease_name("wanserve"), 30, 1000.0) == (True, "pod-a")
    lease = stored(kmock, "wanserve-policy-wanserve")
    assert lease["spec"]["holderIdentity"] == "pod-a" and lease["spec"]["leaseDurationSeconds"] == 30
    kmock.objects[kmock.resource(LEASES), NS, "wanserve-policy-wanserve"].patch({"metadata": {"resourceVersion": "5"}})
    assert await keeper.hold(NS, lease_name("wanserve"), 30, 1010.0) == (True, "pod-a")
    renewal = writes(kmock)[-1]
    assert renewal.method == kmock.method.PATCH
    assert renewal.data["metadata"]["resourceVersion"] == "5"
    assert renewal.data["spec"]["renewTime"] == micro_time(1010.0)


@pytest.mark.asyncio(loop_scope="session")
async def test_a_second_operator_stands_by_while_the_holder_renews_then_takes_over(
    kmock: kmock.KubernetesEmulator, connection: KubeConnection
) -> None:
    first, second = LeaseKeeper(connection, "pod-a"), LeaseKeeper(connection, "pod-b")
    await first.hold(NS, "wanserve-policy-p", 30, 1000.0)
    assert await second.hold(NS, "wanserve-policy-p", 30, 1020.0) == (False, "pod-a")
    assert await second.hold(NS, "wanserve-policy-p", 30, 1031.0) == (True, "pod-b")  # pod-a stopped renewing
    lease = stored(kmock, "wanserve-policy-p")
    assert (lease["spec"]["holderIdentity"], lease["spec"]["leaseTransitions"]) == ("pod-b", 1)
    assert await first.hold(NS, "wanserve-policy-p", 30, 1032.0) == (False, "pod-b")


@pytest.mark.asyncio(loop_scope="session")
async def test_the_loser_of_a_race_skips_the_step(kmock: kmock.KubernetesEmulator, connection: KubeConnection) -> None:
    await LeaseKeeper(connection, "pod-a").hold(NS, "wanserve-policy-p", 30, 1000.0)
    kmock.objects[kmock.resource(LEASES), NS, "wanserve-policy-p"].patch({"metadata": {"resourceVersion": "9"}})
    # pod-c read the expired Lease, but pod-b wrote it first: the API server refuses pod-c's stale write.
    kmock[kmock.method.PATCH, kmock.resource(LEASES)] << 409
    assert await LeaseKeeper(connection, "pod-c").hold(NS, "wanserve-policy-p", 30, 2000.0) == (False,
                                                                                              "another operator")
    # What made the API server refuse it: the write named the version it had read.
    assert "resourceVersion" in writes(kmock)[-1].data["metadata"]


@pytest.mark.asyncio(loop_scope="session")
async def test_two_operators_creating_at_once_get_one_lease(
    kmock: kmock.KubernetesEmulator, connection: KubeConnection
) -> None:
    kmock.objects[kmock.resource(LEASES), NS, "wanserve-policy-p"] = {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "wanserve-policy-p", "namespace": NS},
        "spec": {"holderIdentity": "pod-a", "renewTime": micro_time(1000.0), "leaseDurationSeconds": 30},
    }
    kmock[kmock.method.GET, kmock.resource(LEASES)] << 404  # pod-b read before pod-a created it
    assert await LeaseKeeper(connection, "pod-b").hold(NS, "wanserve-policy-p", 30, 1001.0) == (False,
                                                                                              "another operator")
