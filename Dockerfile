# The one image of every service: `energy-tracker serve NAME` (distributed, see compose.yaml) or
# `energy-tracker up` (a household in one container, its data on the /data volume):
#   docker build -t energy-tracker .
#   docker run -p 8080:8080 -v et-data:/data energy-tracker up
# The web dashboard is built here by Node.js from web/ and its lockfile (its own stage: nothing
# of Node is in the final image), so the image always serves it at /.
# BASE_IMAGE is any Debian-like image with Python 3.11+ and its venv module; NODE_IMAGE any with
# Node.js 20.19+ and npm (what Vite 7 needs); the official ones by default. The compose test
# builds the same file on stand-ins made locally (scripts/compose-test).
ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS web
WORKDIR /web
# The packages alone first (from the committed lockfile), so a change to the sources rebuilds
# only the build below.
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY web/ ./
# Into ../src/energy_tracker/dashboard (vite.config.ts), as `make web` does on a host.
RUN npx vite build --logLevel warn

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/energy-tracker
WORKDIR /src
# The dependencies alone first, read from pyproject.toml: a change to the source rebuilds only
# the small layer below, not the ~60 MB of wheels.
COPY pyproject.toml ./
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && /opt/energy-tracker/bin/pip install -q -r /tmp/requirements.txt
COPY README.md ./
COPY src ./src
COPY --from=web /src/energy_tracker/dashboard ./src/energy_tracker/dashboard
RUN /opt/energy-tracker/bin/pip install -q --no-deps . \
 && /opt/energy-tracker/bin/python -m compileall -q /opt/energy-tracker/lib

FROM ${BASE_IMAGE}
# A fixed uid, so a bind-mounted data directory can be given to it (chown 10001).
RUN useradd --system --uid 10001 --user-group --home-dir /data --create-home energy-tracker
COPY --from=build /opt/energy-tracker /opt/energy-tracker
ENV PATH=/opt/energy-tracker/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ET_DATA_DIR=/data \
    ET_HTTP_HOST=0.0.0.0 \
    ET_HTTP_PORT=8080
USER energy-tracker
WORKDIR /data
VOLUME /data
EXPOSE 8080
# Ready, not merely alive: /readyz fails while a backend or a background worker is down.
# A generous start period: failures in it do not count, and the first success ends it at once.
HEALTHCHECK --interval=10s --timeout=3s --start-period=180s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('ET_HTTP_PORT', '8080'), timeout=2)"]
# SIGTERM (docker stop) is a graceful stop: no new requests, those in flight finish, offsets
# are committed; compose gives each service 10 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["energy-tracker"]
CMD ["up"]
