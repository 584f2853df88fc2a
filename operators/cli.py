"""``wanserve-operator``: run the control plane locally (next to a Serve app) or on Kubernetes.

    wanserve-operator local --url http://127.0.0.1:8000 --interval 5 [--policy-file spec.yaml]
    wanserve-operator kubernetes [--namespace wanserve] [--policy-label app.kubernetes.io/instance=wanserve]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import yaml

from operators.telemetry import DEFAULT_PORT


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wanserve-operator", description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)

    local = modes.add_parser("local", help="drive a local Serve app through its admin endpoint")
    local.add_argument("--url", default="http://127.0.0.1:8000", help="the ingress base URL")
    local.add_argument("--interval", type=float, default=None,
                       help="seconds between control steps (default: the spec's controlIntervalSeconds)")
    local.add_argument("--policy-file", type=Path, default=None,
                       help="a YAML file with a VideoServingPolicy spec (camelCase fields)")
    local.add_argument("--admin-key", default=os.environ.get("WANSERVE_ADMIN_KEY", ""),
                       help="the ingress admin key (default: $WANSERVE_ADMIN_KEY)")
    local.add_argument("--metrics-port", type=int, default=DEFAULT_PORT, help="0 turns the /metrics server off")

    kube = modes.add_parser("kubernetes", help="run the kopf operator for VideoServingPolicy resources")
    kube.add_argument("--namespace", default=os.environ.get("WANSERVE_NAMESPACE") or os.environ.get("POD_NAMESPACE"),
                      help="namespace to watch (default: $WANSERVE_NAMESPACE or $POD_NAMESPACE; none: all)")
    kube.add_argument("--metrics-port", type=int, default=DEFAULT_PORT, help="0 turns the /metrics server off")
    kube.add_argument("--liveness", default="http://0.0.0.0:8081/healthz", help="kopf's liveness endpoint")
    kube.add_argument("--policy-label", action="append", default=[], metavar="KEY=VALUE",
                      help="control only the policies with this label (repeatable); the chart passes its release's")
    kube.add_argument("--verbose", action="store_true")
    return parser


def _load_spec_file(path: Path | None) -> object:
    if path is None:
        return {}
    raw = yaml.safe_load(path.read_text())
    # Accept either a bare spec or a whole VideoServingPolicy manifest.
    return raw.get("spec", raw) if isinstance(raw, dict) and "spec" in raw else raw


async def _run_local(args: argparse.Namespace) -> int:
    from operators.actuators.local import LocalActuator
    from operators.local_loop import LocalController
    from operators.metrics.sources import source_for
    from operators.spec import SpecError, parse_spec
    from operators.telemetry import DecisionMetrics

    try:
        spec = parse_spec(_load_spec_file(args.policy_file))
    except (SpecError, OSError, yaml.YAMLError) as error:
        print(f"wanserve-operator: {error}", file=sys.stderr)
        return 2
    base = args.url.rstrip("/")
    metrics = DecisionMetrics()
    if args.metrics_port:
        metrics.serve(args.metrics_port)
    # The admin key also opens /metrics on a keyed ingress.
    source = source_for(spec.metrics, f"{base}/metrics", args.admin_key or None)
    controller = LocalController(spec, source, LocalActuator(base, args.admin_key), metrics)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await controller.run(args.interval or spec.control_interval_seconds, stop)
    return 0


def _run_kubernetes(args: argparse.Namespace) -> int:
    import kopf

    from operators.kube.handlers import OperatorConfig

    labels = dict(item.partition("=")[::2] for item in args.policy_label)
    if any(not key for key in labels):
        print("wanserve-operator: --policy-label takes KEY=VALUE, e.g. app.kubernetes.io/instance=wanserve",
              file=sys.stderr)
        return 2
    kopf.configure(verbose=args.verbose)
    kopf.run(
        # One operator controls a policy at a time through its Lease (operators/kube/lease.py), not
        # through kopf's peering, which needs a cluster-wide CRD of its own.
        standalone=True,
        namespaces=[args.namespace] if args.namespace else (),
        clusterwide=not args.namespace,
        liveness_endpoint=args.liveness or None,
        memo=kopf.Memo(config=OperatorConfig(metrics_port=args.metrics_port, policy_labels=labels)),
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One line per decision, not one per HTTP call the loop makes.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.mode == "local":
        return asyncio.run(_run_local(args))
    return _run_kubernetes(args)


if __name__ == "__main__":
    sys.exit(main())
