# syntax=docker/dockerfile:1
# memmon agent image: `docker build -t memmon .` then
#   docker run --read-only -p 8080:8080 -p 9091:9091 memmon [--unit NAME | --pid N | --match RE | --cgroup PATH ...]
# The entrypoint already passes `--bind 0.0.0.0`; everything after the image name is appended as memmon flags.
#
# Base image: python:3.11-slim pinned by tag, in its Debian 12 "bookworm" variant so that the tag cannot move to a
# newer Debian under us. Not pinned by digest (it was written without network access to a registry); to pin it,
# append the digest of the day to both FROM lines: `python:3.11-slim-bookworm@sha256:<digest>`, as printed by
# `docker buildx imagetools inspect python:3.11-slim-bookworm`. Both stages must use the same image: the venv
# built in the first one points at /usr/local/bin/python3.11 of that image. (Written literally rather than
# through an ARG so that hadolint can check the tag.)

# ---------------------------------------------------------------------------------------------------------------
# builder: a wheel of memmon (and every runtime dependency as wheels), installed into a venv. No extra: the
# Kubernetes integration speaks to the API server with aiohttp (no module imports the `kubernetes` client).
FROM python:3.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps the rest of the checkout out of the context).
COPY pyproject.toml README.md LICENSE ./
COPY agent/ ./agent/

# 1. wheels for memmon and all its runtime dependencies;
# 2. a venv without pip (nothing in the final image can install packages);
# 3. memmon installed into it from those wheels only (--no-index: exactly what step 1 resolved),
#    byte-compiled here because the final image runs on a read-only root file system.
RUN python -m pip wheel --wheel-dir /wheels . \
    && python -m venv --without-pip /opt/memmon \
    && python -m pip --python /opt/memmon/bin/python install --no-index --find-links /wheels \
        memmon \
    && /opt/memmon/bin/memmon --version

# ---------------------------------------------------------------------------------------------------------------
# final: the same Python image, the venv, a non-root numeric user, no shell.
FROM python:3.11-slim-bookworm

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="memmon" \
      org.opencontainers.image.description="Memory watchdog for production services: samples a process, a cgroup and the host, grades ok/warning/critical/emergency, alerts, acts before the OOM killer; health API on 8080, Prometheus metrics on 9091." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"

# Runtime environment:
# - the venv first on PATH (the exec-form ENTRYPOINT below is resolved with it);
# - no .pyc writes (the root file system may be read-only; the venv was byte-compiled in the builder);
# - HOME, XDG_STATE_HOME and TMPDIR all inside the one writable place, the state volume: memmon's default
#   state directory is $XDG_STATE_HOME/memmon = /var/lib/memmon; SQLite and Python temp files go to TMPDIR.
ENV PATH="/opt/memmon/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/memmon \
    XDG_STATE_HOME=/var/lib \
    TMPDIR=/var/lib/memmon

COPY --from=builder /opt/memmon /opt/memmon

# The state directory, owned by the runtime user (a fresh named volume copies this ownership); no setuid/setgid
# binaries left for the non-root user to escalate through; and no shell at all (removed last: nothing after this
# instruction needs one, and the ENTRYPOINT is in exec form). `docker exec ... sh` does not work: debug with
# `kubectl debug` / `docker run --pid container:...` and an image that has a shell.
RUN install -d -o 65532 -g 65532 -m 0750 /var/lib/memmon \
    && find / -xdev -type f -perm /6000 -exec chmod a-s {} + \
    && rm -f /bin/sh /bin/dash /bin/bash /bin/rbash /usr/bin/sh /usr/bin/dash /usr/bin/bash /usr/bin/rbash

VOLUME ["/var/lib/memmon"]
WORKDIR /var/lib/memmon

USER 65532:65532

# 8080: health API (/health, /health/live, /health/ready, /metrics); 9091: Prometheus /metrics.
EXPOSE 8080 9091

ENTRYPOINT ["memmon", "--bind", "0.0.0.0"]
# Setting ENTRYPOINT already drops the base image's CMD ["python3"]; an explicit empty CMD says so.
CMD []
