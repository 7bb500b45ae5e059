# One image for all of Spine: the operator (`spine`, the entrypoint) and the runtimes
# (`spine-runtime`, which the operator sets as the command of the workloads it creates).
# Build: docker build -t ghcr.io/spine-iiot/spine:0.1.0 .
# Checked here by hadolint only (tests/integration/test_install.py); no image is built until CI does.

# Build stage: the project's wheel, installed with its dependencies into a venv.
FROM python:3.11-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY runtime/ runtime/

# The venv lives at the same path in both stages and both use the same base image's Python,
# so it can be copied as a whole; pip compiles the bytecode here because the root filesystem
# is read-only at run time.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/spine \
    && /opt/spine/bin/pip install --no-cache-dir /wheels/*.whl

# The official AsyncAPI JSON Schemas (npm @asyncapi/specs, pinned and sha512-checked by the
# script) for the operator's spec validation; the final stage names them with an env var.
RUN /opt/spine/bin/python -m spine_operator.asyncapi_download --dest /opt/spine/share/asyncapi-specs

# Final stage: the slim base, the venv and a non-root user; no compiler, no sources.
FROM python:3.11-slim-bookworm

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="spine" \
      org.opencontainers.image.description="Spine: Kubernetes operator and runtimes for factory IIoT" \
      org.opencontainers.image.source="https://github.com/spine-iiot/spine" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

# Debian's HAProxy for the proxy pod: `spine-runtime proxy` runs it as its child (master-worker),
# the same 2.6 series the tests run against (tests/integration/test_proxy.py).
RUN apt-get update \
    && apt-get install -y --no-install-recommends haproxy=2.6.* \
    && rm -rf /var/lib/apt/lists/*

# A named user for tools that look up the current user; the numeric USER below is what
# Kubernetes checks against runAsNonRoot.
RUN groupadd --system --gid 10001 spine \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin spine

COPY --from=build /opt/spine /opt/spine

ENV PATH="/opt/spine/bin:${PATH}" \
    SPINE_ASYNCAPI_SCHEMAS=/opt/spine/share/asyncapi-specs \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 10001:10001
ENTRYPOINT ["spine"]
