# One image for the server-side services: collector, API, simulator, migrations.
# Build context is the repository root; see docker-compose.yml.
FROM python:3.12.8-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/instrumetry

COPY pyproject.toml README.md ./
COPY instrumetry ./instrumetry
COPY agents ./agents
COPY collector ./collector
COPY api ./api
COPY sim ./sim
COPY dashboards ./dashboards
# /var/lib/instrumetry/sim holds the simulator's truth and outboxes (compose mounts
# a named volume there); made and owned by the user here, so a fresh volume
# inherits the ownership and the simulator can write it.
RUN pip install '.[server]' && useradd --system --uid 10001 instrumetry \
    && install -d -o instrumetry -g instrumetry /var/lib/instrumetry/sim

USER instrumetry
ENTRYPOINT ["instrumetry"]
CMD ["--help"]
