# feedpipe image: the worker, the read API, `topics apply` and `replay` all run from it
# (docker-compose.yml picks the command). Kafka and Redis run from their own images.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FEEDPIPE_STATE_DIR=/var/lib/feedpipe

WORKDIR /app

# Dependencies first (cached layer): the fully pinned lock, the same one CI installs.
COPY requirements.lock ./
RUN pip install -r requirements.lock

# The project. Editable install: feedpipe reads topology.yaml and schemas/ beside the package.
COPY . .
RUN pip install --no-deps -e . \
    && useradd --system --create-home --home-dir /var/lib/feedpipe feedpipe \
    && chown -R feedpipe /var/lib/feedpipe

USER feedpipe
CMD ["feedpipe", "--help"]
