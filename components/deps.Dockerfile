# Shared dependency image of every pipeline stage (stage-deps): one venv at /opt/venv with
# exactly components/requirements.txt (generated from requirements.lock, sha256-checked).
# Each stage image is FROM this one plus its code (components/<stage>/Dockerfile), so CI
# builds one venv, not seven. Built by `make images` (pipelines/images.py).
# PYTHON_BASE: the local Debian bookworm + python3 3.11 base (scripts/base_image.sh).
ARG PYTHON_BASE=cashier-integrity/python-base:3.11-bookworm
# hadolint ignore=DL3006
FROM ${PYTHON_BASE}
LABEL org.opencontainers.image.title="cashier-integrity-stage-deps" \
      org.opencontainers.image.description="Runtime dependencies of the pipeline stages" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY components/requirements.txt /tmp/requirements.txt
# --require-hashes --no-deps: the file is the complete, hash-pinned closure (a test checks
# every pin and hash against requirements.lock); nothing is resolved at build time.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --require-hashes --no-deps -r /tmp/requirements.txt \
 && /opt/venv/bin/pip check \
 && rm /tmp/requirements.txt
# VAR_DIR/MPLCONFIGDIR/NUMBA_CACHE_DIR: writable places for the non-root user; on
# Kubeflow every input/output is a path or s3:// URI passed on the command line.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VAR_DIR=/tmp/var \
    MPLCONFIGDIR=/tmp/matplotlib \
    NUMBA_CACHE_DIR=/tmp/numba
RUN groupadd --gid 10001 app \
 && useradd --no-log-init --uid 10001 --gid app --create-home --shell /usr/sbin/nologin app
WORKDIR /app
COPY components/__init__.py components/__init__.py
COPY components/contracts/ components/contracts/
USER 10001:10001
