"""Actuators: put a decided :class:`~serve.policy.ServingPolicy` into the data plane.

``local`` talks to the ingress's authenticated admin endpoint (a local run without Redis);
``policy_store`` publishes to the Redis policy store every router replica follows (the Kubernetes
path, driven by :mod:`operators.kube`). Neither writes anything Helm owns.
"""

from serve.policy import ServingPolicy


class ActuatorError(RuntimeError):
    """The data plane did not take the policy; the message says what it answered."""


def same_policy(current: ServingPolicy | None, desired: ServingPolicy) -> bool:
    """Equal in what the data plane acts on: the reason text and drill faults do not count."""
    if current is None:
        return False
    ignore = {"reason", "faults"}
    return current.model_dump(exclude=ignore) == desired.model_dump(exclude=ignore)


def keep_faults(current: ServingPolicy | None, desired: ServingPolicy) -> ServingPolicy:
    """The operator never decides fault injection: carry over whatever drill the data plane runs."""
    if current is None or not current.faults:
        return desired
    return desired.model_copy(update={"faults": current.faults})


__all__ = ["ActuatorError", "keep_faults", "same_policy"]
