# syntax=docker/dockerfile:1
# The replaybus server image: `docker build -t replaybus .` (see docs/operations-container.md).
# Settings come from REPLAYBUS_* environment variables at run time; no secret is baked in.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: the server distribution (the repository root's pyproject) in a venv ----------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/replaybus
WORKDIR /src
# Only what the wheel is built from: pyproject (with README.md, its long description) and the
# three packages it ships. The clients/python distribution is not part of the server.
COPY pyproject.toml README.md ./
COPY app ./app
COPY api ./api
COPY storage ./storage
RUN /opt/replaybus/bin/pip install . \
    && /opt/replaybus/bin/replaybus --help >/dev/null

# ---- runtime: the venv on a clean slim image, as a fixed non-root user ----------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="replaybus" \
      org.opencontainers.image.description="Multi-tenant platform-events service: REST publish, SSE and Bayeux subscribe, resume by ReplayId." \
      org.opencontainers.image.licenses="Apache-2.0"
# Fixed numeric IDs, so Kubernetes' runAsNonRoot can check them and volumes can be shared.
RUN groupadd --system --gid 10001 replaybus \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin replaybus
COPY --from=builder /opt/replaybus /opt/replaybus
# The venv is compiled at build time and the root filesystem may be read-only: write no .pyc.
# Inside a container the server must listen on every interface (the default is loopback).
ENV PATH=/opt/replaybus/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    REPLAYBUS_HOST=0.0.0.0 \
    REPLAYBUS_PORT=8080
USER 10001:10001
EXPOSE 8080
# SIGTERM drains: readiness fails, SSE streams end with a retry hint, held long-polls return,
# open requests get REPLAYBUS_SHUTDOWN_GRACE to finish.
STOPSIGNAL SIGTERM
# The slim image has no curl: ask /healthz with the standard library, on the configured port.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('REPLAYBUS_PORT', '8080'), timeout=2)"]
ENTRYPOINT ["replaybus"]
CMD ["serve"]
