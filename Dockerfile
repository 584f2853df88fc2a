# Two images from one Dockerfile, one version of the code:
#
# - `serving` (the default, last target): Ray's GPU image plus this project. The Helm chart runs it for
#   the Ray head and the three stage worker groups (KubeRay needs the image's Ray to match
#   rayClusterConfig.rayVersion), the model download Job and the check-model init containers.
# - `operator`: the policy operator (`wanserve-operator`) alone on python:3.11-slim: kopf, the Kubernetes
#   client and the package, installed without its dependencies; only operators/requirements.txt. No
#   torch, Ray or CUDA: a few hundred MB instead of many GB, and nothing of the GPU stack to patch.
#
#   docker build --target serving  -t ghcr.io/wanserve/wanserve:0.1.0 .
#   docker build --target operator -t ghcr.io/wanserve/wanserve-operator:0.1.0 .
#   docker push ghcr.io/wanserve/wanserve:0.1.0 && docker push ghcr.io/wanserve/wanserve-operator:0.1.0
#
# Tag it with the chart's appVersion (charts/wanserve/Chart.yaml), which is the image tag the chart
# uses by default; never `latest`. No container engine runs in this project's CI, so the image is not
# built there; the chart tests check what the chart asks of it (user 1000, Ray 2.60.0, the commands).
#
# Model weights are not baked in: they are mounted read-only at /models from a PVC or a host path.

ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS operator

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1
# The chart runs every pod as uid 1000, gid 100 (the Ray image's `ray` user).
RUN useradd --uid 1000 --gid 100 --create-home wanserve
WORKDIR /home/wanserve/app
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 operators ./operators
COPY --chown=1000:100 serve ./serve
RUN pip install --no-cache-dir -r operators/requirements.txt \
 && pip install --no-cache-dir --no-deps . \
 && python -c "import importlib.util as u, operators.cli; assert not any(u.find_spec(m) for m in ('torch', 'ray')), 'the operator image must not carry torch or ray'"
USER 1000:100
CMD ["wanserve-operator", "--help"]

FROM ${RAY_IMAGE} AS serving

# Runtime settings for a read-only root filesystem: caches live on the /tmp emptyDir the chart mounts,
# and nothing is ever downloaded from the Hugging Face Hub at run time.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    HF_HOME=/tmp/huggingface \
    XDG_CACHE_HOME=/tmp/.cache

# The base image runs as `ray` (uid 1000, gid 100), the user the chart's securityContext expects.
USER ray
WORKDIR /home/ray/wanserve

# Dependencies first (cached while only the code changes). The base image has ray 2.60.0 already;
# pip keeps it because pyproject pins the same version, and installs torch's CUDA build from PyPI.
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users serve ./serve
COPY --chown=ray:users operators ./operators
RUN pip install --no-cache-dir . \
 && python -c "import ray, serve.app, operators; assert ray.__version__ == '2.60.0', ray.__version__"

# The chart sets each container's command (KubeRay starts Ray itself); this default is for `docker run`
# smoke checks only.
CMD ["wanserve", "--help"]
