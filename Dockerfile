# runner's container image (docs/DEPLOY.md).
#   docker build -t runner .          (podman builds it unchanged)
#   docker run --rm -v "$PWD/examples:/workflows:ro" runner apply diamond.yaml
# The build stage makes the wheel and the wheels of its dependencies; the runtime stage installs
# them into a venv with pip run from its wheel, so no pip, compiler, cache or test dependency
# stays in the final image.

ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS build
ARG RUNNER_VERSION=0.1.0
# Debian's python3 (3.11 on bookworm): the Python runner is tested on. pip checks TLS against
# the system store, which a builder can extend by mounting its CA folder (docs/DEPLOY.md).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv \
 && update-ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# The dependencies' wheels first, from pyproject.toml alone: a change of runner's code reuses them.
COPY pyproject.toml ./
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install -q --upgrade pip \
 && /opt/build/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', \
      'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && /opt/build/bin/pip wheel -q --wheel-dir /wheels -r /tmp/requirements.txt \
 && /opt/build/bin/pip download -q --no-deps --dest /pip pip \
 && mv /pip/pip-*.whl /pip/pip.whl
COPY README.md ./
COPY runner ./runner
COPY schemas ./schemas
# The label's version must be the package's (runner/__init__.py): fail the build otherwise.
RUN found="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' runner/__init__.py)" \
 && if [ "$found" != "$RUNNER_VERSION" ]; then \
      echo "RUNNER_VERSION=$RUNNER_VERSION but runner/__init__.py says $found:" \
           "pass --build-arg RUNNER_VERSION=$found" >&2; exit 1; fi
RUN /opt/build/bin/pip wheel -q --no-deps --wheel-dir /wheels . \
 && cd / && sha256sum wheels/*.whl pip/pip.whl > /wheels.sha256

FROM ${BASE_IMAGE}
ARG RUNNER_VERSION=0.1.0
ARG REVISION=
ARG SOURCE=
LABEL org.opencontainers.image.title="runner" \
      org.opencontainers.image.description="A workflow-file driven batch runner" \
      org.opencontainers.image.version="${RUNNER_VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
 && groupadd --gid 10001 runner \
 && useradd --uid 10001 --gid 10001 --home-dir /var/lib/runner --create-home \
      --shell /usr/sbin/nologin runner \
 && mkdir -p /var/lib/runner/logs /workflows \
 && chown -R runner:runner /var/lib/runner
# What gets installed, by digest. Copied first so that a change of any wheel invalidates the
# install step below (a builder may not hash the content of a RUN's mounts).
COPY --from=build /wheels.sha256 /opt/runner/wheels.sha256
# pip runs from its wheel (a documented use) and leaves nothing behind but the venv.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,from=build,source=/pip,target=/pip \
    python3 -m venv --without-pip /opt/runner \
 && /opt/runner/bin/python /pip/pip.whl/pip install -q --no-index --no-cache-dir \
      --disable-pip-version-check --find-links /wheels runner \
 && /opt/runner/bin/runner --version
ENV PATH=/opt/runner/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RUNNER_STORE=sqlite:////var/lib/runner/state.db \
    RUNNER_LOG_DIR=/var/lib/runner/logs
# The embedded store and the task logs: keep them on a volume.
VOLUME ["/var/lib/runner"]
WORKDIR /workflows
USER 10001:10001
# runner is PID 1: SIGTERM drains a worker, cancels `runner apply`'s run (exit 143), and it
# reaps orphaned descendants of tasks.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=10s --start-period=20s --retries=3 \
    CMD ["runner", "health"]
ENTRYPOINT ["runner"]
CMD ["--help"]
