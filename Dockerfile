# syntax=docker/dockerfile:1
# ipubsub container image: the wheel the README installs, built in a first
# stage with the wheels of its dependencies, installed in a slim second stage
# without pip caches or build tools, run as a non-root user.
#
#   docker build -t ipubsub:0.1.0 .
#   docker build --build-arg EXTRAS=all -t ipubsub:0.1.0-all .   # + cassandra, mongodb
#   docker run -p 127.0.0.1:8080:8080 ipubsub:0.1.0
#
# Configuration: /etc/ipubsub/ipubsub.yaml (mount your own) plus
# IPUBSUB_<SECTION>_<KEY> environment variables, which win over the file.

ARG PYTHON_VERSION=3.11
# Extras of the wheel to install: speed (uvloop), postgres, mysql, cassandra, mongodb, all.
ARG EXTRAS=speed,postgres,mysql

FROM python:${PYTHON_VERSION}-slim AS build
ARG EXTRAS
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ipubsub ./ipubsub
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[${EXTRAS}]"

FROM python:${PYTHON_VERSION}-slim AS runtime
ARG EXTRAS
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 ipubsub \
 && useradd --system --uid 10001 --gid ipubsub --home-dir /var/lib/ipubsub --shell /usr/sbin/nologin ipubsub \
 && mkdir -p /var/lib/ipubsub /etc/ipubsub \
 && chown ipubsub:ipubsub /var/lib/ipubsub
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels "ipubsub[${EXTRAS}]"
COPY deploy/config/ipubsub.yaml /etc/ipubsub/ipubsub.yaml
WORKDIR /var/lib/ipubsub
USER 10001:10001
EXPOSE 8080
# Healthy while /health answers 200 ("ok"); 503 while draining or stopped.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('IPUBSUB_NODE_LISTEN', ':8080').rsplit(':', 1)[1]; sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=2).status == 200 else 1)"]
# SIGTERM (docker stop, Kubernetes): the node leaves the ring, hands its
# buffered messages to the other nodes and exits 0 within its grace period.
STOPSIGNAL SIGTERM
ENTRYPOINT ["ipubsub", "serve"]
CMD ["--config", "/etc/ipubsub/ipubsub.yaml"]
