# fleetpay: one image for every process (migrate, ingest, worker, scheduler, simulator).
#
#   docker build -t fleetpay:local .
#   docker run --rm fleetpay:local --help
#
# No secrets are baked in: every setting comes from FLEETPAY_* variables at run time
# (docker-compose.yml, docs/operations.md). No HEALTHCHECK here: compose probes each service
# the way that fits it (ingest: GET /readyz).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# --- build the fleetpay wheel (source changes only invalidate this stage and the last layer) ---
FROM base AS wheel
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- the runtime image -------------------------------------------------------------------------
FROM base

# Dependencies first, read from pyproject.toml alone, so that a code change reuses this layer.
# (Only [project].dependencies: not the dev or embedded extras.)
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("/tmp/pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt /tmp/pyproject.toml

COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels

# A fixed, unprivileged uid/gid (numeric USER so that runtimes can verify "not root").
RUN groupadd --system --gid 10001 fleetpay \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin fleetpay \
    && install -d -o 10001 -g 10001 /app
WORKDIR /app
USER 10001:10001

EXPOSE 8000
ENTRYPOINT ["fleetpay"]
CMD ["--help"]
