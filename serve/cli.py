"""The ``wanserve`` command: generate a video, build the tiny checkpoint, run the local server."""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from serve.params import PROFILES, GenerationParams, describe_errors, size_fields


def _generation_params(args: argparse.Namespace) -> GenerationParams:
    fields: dict[str, Any] = dict(PROFILES[args.profile])
    if args.size:
        fields.update(size_fields(args.size))
    overrides = {
        "num_frames": args.frames,
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance,
        "fps": args.fps,
        "seed": args.seed,
        "scheduler": args.scheduler,
        "negative_prompt": args.negative_prompt,
    }
    fields.update({key: value for key, value in overrides.items() if value is not None})
    return GenerationParams(prompt=args.prompt, **fields)


def _generate(args: argparse.Namespace) -> int:
    try:
        params = _generation_params(args)
    except ValidationError as error:
        print(f"wanserve: invalid request:\n{describe_errors(error)}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"wanserve: invalid request: {error}", file=sys.stderr)
        return 2
    output = Path(args.output)
    if not output.parent.is_dir():
        print(f"wanserve: output folder {output.parent} does not exist", file=sys.stderr)
        return 2

    from tqdm import tqdm

    from serve.pipeline.checkpoint import resolve_model_dir
    from serve.pipeline.reference_image import load_reference_image
    from serve.pipeline.stages import StagePipeline

    try:
        image = load_reference_image(Path(args.image).read_bytes()) if args.image else None
    except (OSError, ValueError) as error:
        print(f"wanserve: --image {args.image}: {error}", file=sys.stderr)
        return 2

    try:
        model_dir = resolve_model_dir(args.model)
    except FileNotFoundError as error:
        print(f"wanserve: {error}", file=sys.stderr)
        return 2
    pipeline = StagePipeline(model_dir, device=args.device, compile=args.compile)
    seed = params.seed if params.seed is not None else secrets.randbelow(2**31)
    with tqdm(total=params.num_inference_steps, desc="denoising", unit="step", file=sys.stderr) as bar:
        generation = pipeline.generate(params, seed, on_step=lambda done, _total: bar.update(done - bar.n), image=image)
    # Write to a temporary name first so an interrupted run never leaves a half-written mp4.
    partial = output.with_name(output.name + ".partial")
    partial.write_bytes(generation.mp4)
    os.replace(partial, output)
    stages = ", ".join(f"{name} {secs:.2f}s" for name, secs in generation.stage_seconds.items())
    print(
        f"{output}: {params.size}, {params.num_frames} frames at {params.fps} fps "
        f"({params.seconds:.2f}s), {params.num_inference_steps} steps, seed {seed}; {stages}"
    )
    return 0


def _tiny_checkpoint(args: argparse.Namespace) -> int:
    from serve.pipeline.tiny_checkpoint import build_tiny_checkpoint

    path = build_tiny_checkpoint(args.directory, seed=args.seed)
    print(f"tiny Wan2.2-TI2V-5B checkpoint written to {path}")
    return 0


def _check_model(args: argparse.Namespace) -> int:
    from serve.pipeline.model_files import IncompleteModel, require_complete

    for directory in args.directories:
        try:
            require_complete(directory)
        except IncompleteModel as error:
            print(f"wanserve: {error}", file=sys.stderr)
            return 1
        print(f"{directory}: complete")
    return 0


def _download_model(args: argparse.Namespace) -> int:
    from serve.pipeline.model_download import download_model
    from serve.pipeline.model_files import IncompleteModel

    try:
        path = download_model(args.repo, args.revision, args.directory)
    except IncompleteModel as error:
        print(f"wanserve: the download finished but {error}", file=sys.stderr)
        return 1
    print(f"{args.repo}@{args.revision} downloaded to {path}: complete")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from serve.app import local

    try:
        candidate = _candidate(args)
        app_args = local.args_from_env(model_dir=args.model, redis_url=args.redis_url, candidate=candidate,
                                       backup_instance=args.backup or None)
    except ValidationError as error:
        print(f"wanserve: invalid configuration:\n{describe_errors(error)}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as error:
        print(f"wanserve: --candidate {args.candidate}: {error}", file=sys.stderr)
        return 2
    if app_args.model_dir is None:
        print("wanserve: no model directory given (--model or WANSERVE_MODEL_DIR): serving the tiny "
              "built-in checkpoint (random weights: the videos are noise)", file=sys.stderr)
    if app_args.redis_url is None:
        print("wanserve: no Redis (WANSERVE_REDIS_URL): jobs and the cache live in this process", file=sys.stderr)
    if app_args.api_keys_file is None:
        print("wanserve: WARNING: no API keys configured (WANSERVE_API_KEYS_FILE): the API is open to anyone "
              "who can reach it, as tenant 'anonymous'; create keys with `wanserve keys add TENANT`", file=sys.stderr)
    elif not Path(app_args.api_keys_file).is_file():
        print(f"wanserve: WARNING: the API keys file {app_args.api_keys_file} does not exist: every API request "
              "will be refused until it does (`wanserve keys add TENANT` creates it)", file=sys.stderr)
    if args.operator and not app_args.admin_key:
        # The local operator needs the admin endpoint even when tenants' keys are configured: give it a
        # key of its own for this run only.
        app_args = app_args.model_copy(update={"admin_key": secrets.token_urlsafe(24)})
    url = local.start(app_args, host=args.host, port=args.port)
    operator = _start_operator(url, args, app_args, app_args.admin_key) if args.operator else None
    print(f"\nwanserve is serving {app_args.model_version} at {url}  (API docs: {url}/docs)\n")
    if app_args.candidate is not None:
        walk = "the operator walks it through its canary steps" if operator is not None else "no operator runs"
        print(f"Candidate {app_args.candidate.name} is deployed beside it at 0% of traffic; {walk}: watch "
              f"{url}/ops\n")
    print("Try it:")
    print(f"  curl -s {url}/v1/videos -H 'Content-Type: application/json' \\")
    print("    -d '{\"prompt\": \"a golden retriever running through a sunny park\", \"size\": \"256x256\", "
          "\"num_frames\": 17, \"num_inference_steps\": 4}'")
    print(f"  curl -s {url}/v1/videos/VIDEO_ID")
    print(f"  curl -s -o video.mp4 {url}/v1/videos/VIDEO_ID/content")
    print("\nPress Ctrl-C to stop.", flush=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    with contextlib.suppress(KeyboardInterrupt):
        stopping.wait()
    print("\nwanserve: stopping", file=sys.stderr)
    if operator is not None:
        operator.terminate()
        operator.wait(timeout=10)
    local.stop()
    return 0


def _candidate(args: argparse.Namespace) -> Any:
    """The candidate version of ``--candidate DIR`` (``tiny``: a second tiny checkpoint, another seed)."""
    if not args.candidate:
        return None
    from serve.app.args import ModelVersion
    from serve.pipeline.checkpoint import cache_root, check_model_dir
    from serve.pipeline.tiny_checkpoint import TINY_CHECKPOINT_VERSION, build_tiny_checkpoint

    if args.candidate == "tiny":
        path = cache_root() / f"tiny-wan2.2-ti2v-v{TINY_CHECKPOINT_VERSION}-seed1"
        if not (path / "TINY_CHECKPOINT").exists():
            build_tiny_checkpoint(path, seed=1)
    else:
        path = check_model_dir(args.candidate)
    return ModelVersion(name=args.candidate_version, model_dir=str(path))


# A local canary moves fast enough to watch: 10% -> 50% -> 100%, a step per half minute once three
# candidate requests passed.
LOCAL_CANARY = "  candidateVersion: {name}\n  steps: [10, 50, 100]\n  intervalSeconds: 30\n  minRequests: 3\n"


def _start_operator(url: str, args: argparse.Namespace, app_args: Any, admin_key: str | None) -> Any:
    """The control loop beside the app: load -> tier, errors -> failover, a candidate's canary, as on a cluster."""
    import subprocess
    import tempfile

    policy_file = args.operator_policy
    if not policy_file:
        # The default spec, told which version is the stable one here (and which the candidate).
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="wanserve-policy-", delete=False) as spec:
            spec.write(f"rollout:\n  stableVersion: {app_args.model_version}\n")
            if app_args.candidate is not None:
                spec.write(LOCAL_CANARY.format(name=app_args.candidate.name))
            policy_file = spec.name
    command = [sys.executable, "-m", "operators.cli", "local", "--url", url, "--policy-file", policy_file,
               "--interval", str(args.operator_interval), "--metrics-port", str(args.operator_metrics_port)]
    print(f"wanserve: operator running every {args.operator_interval}s "
          f"(its metrics: http://127.0.0.1:{args.operator_metrics_port}/metrics)", file=sys.stderr)
    # The key goes through the environment, not the command line, so `ps` does not show it.
    return subprocess.Popen(command, env={**os.environ, "WANSERVE_ADMIN_KEY": admin_key or ""})


def _keys_add(args: argparse.Namespace) -> int:
    from serve.tenancy.keys import add_key

    path = args.file or os.environ.get("WANSERVE_API_KEYS_FILE") or "api-keys.yaml"
    if not Path(path).parent.is_dir():
        print(f"wanserve: folder {Path(path).parent} does not exist", file=sys.stderr)
        return 2
    try:
        key = add_key(path, args.tenant, admin=args.admin)
    except (ValidationError, ValueError, OSError) as error:
        print(f"wanserve: cannot add a key to {path}: {error}", file=sys.stderr)
        return 2
    role = "admin key" if args.admin else "key"
    print(f"wanserve: new {role} for tenant {args.tenant!r}; only its hash is stored, in {path}. "
          "Copy it now, it is not shown again:", file=sys.stderr)
    print(key)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wanserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="generate one video in this process")
    generate.add_argument("prompt")
    generate.add_argument("-o", "--output", default="out.mp4", help="mp4 file to write (default: out.mp4)")
    generate.add_argument("--profile", choices=sorted(PROFILES), default="default",
                          help="preset: default = the model's own 1280x704x121, 50 steps; fast = 640x480x17, 25")
    generate.add_argument("--size", help="WIDTHxHEIGHT, multiples of 32 (e.g. 1280x704)")
    generate.add_argument("--frames", type=int, help="number of frames, 4k+1 (e.g. 17, 121)")
    generate.add_argument("--steps", type=int, help="denoising steps")
    generate.add_argument("--guidance", type=float, help="classifier-free guidance scale (default 5.0)")
    generate.add_argument("--fps", type=int, help="frames per second of the mp4 (default 24)")
    generate.add_argument("--seed", type=int, help="random seed (default: a random one, printed)")
    generate.add_argument("--negative-prompt", help="what to steer away from")
    generate.add_argument("--image", help="first-frame image (PNG, JPEG or WebP): image-to-video; "
                                          "scaled to cover --size, then center-cropped")
    generate.add_argument("--scheduler", choices=["unipc", "dpm++"], help="sampler (default unipc)")
    generate.add_argument("--model", help="diffusers-format Wan2.2-TI2V-5B directory "
                                          "(default: $WANSERVE_MODEL_DIR, else the tiny checkpoint)")
    generate.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    generate.add_argument("--compile", action="store_true", help="torch.compile the transformer")
    generate.set_defaults(handler=_generate)

    tiny = commands.add_parser("tiny-checkpoint", help="write the tiny offline checkpoint to DIR")
    tiny.add_argument("directory")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(handler=_tiny_checkpoint)

    check = commands.add_parser("check-model", help="check that diffusers-format model directories are complete")
    check.add_argument("directories", nargs="+", metavar="DIR")
    check.set_defaults(handler=_check_model)

    download = commands.add_parser("download-model", help="download a checkpoint from the Hugging Face Hub "
                                                          "(token from $HF_TOKEN) and check it")
    download.add_argument("directory", help="where to put it (the model directory the stages load)")
    download.add_argument("--repo", default="Wan-AI/Wan2.2-TI2V-5B-Diffusers")
    download.add_argument("--revision", required=True, help="a commit hash (or tag) to pin the weights to")
    download.set_defaults(handler=_download_model)

    serve_cmd = commands.add_parser("serve", help="serve the HTTP API locally with Ray Serve")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8000)
    serve_cmd.add_argument("--model", help="diffusers-format model directory (default: $WANSERVE_MODEL_DIR, else tiny)")
    serve_cmd.add_argument("--redis-url", help="keep jobs and the cache in Redis (default: $WANSERVE_REDIS_URL)")
    serve_cmd.add_argument("--candidate", metavar="DIR",
                           help="serve a candidate version beside the stable one, as its own stage application, "
                                "and let the operator canary it; 'tiny' builds a second tiny checkpoint (another seed)")
    serve_cmd.add_argument("--candidate-version", default="candidate", help="the candidate's version name")
    serve_cmd.add_argument("--backup", action="store_true",
                           help="run a backup instance of the stable version, for the operator to fail over to")
    serve_cmd.add_argument("--no-operator", dest="operator", action="store_false",
                           help="do not run the local operator (degradation tiers, failover, rollouts)")
    serve_cmd.add_argument("--operator-interval", type=float, default=5.0, help="seconds between control steps")
    serve_cmd.add_argument("--operator-policy", help="YAML VideoServingPolicy spec for the local operator")
    serve_cmd.add_argument("--operator-metrics-port", type=int, default=9091)
    serve_cmd.set_defaults(handler=_serve)

    keys = commands.add_parser("keys", help="manage API keys (stored hashed in the keys file)")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    keys_add = keys_commands.add_parser("add", help="create a key for TENANT, print it once, store its hash")
    keys_add.add_argument("tenant", help="tenant name: lowercase letters, digits, '.', '_' or '-'")
    keys_add.add_argument("--admin", action="store_true", help="the tenant may call the /admin endpoints")
    keys_add.add_argument("--file", help="keys file (default: $WANSERVE_API_KEYS_FILE, else ./api-keys.yaml)")
    keys_add.set_defaults(handler=_keys_add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    return int(handler(args))


if __name__ == "__main__":
    sys.exit(main())
