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
RUN pip install '.[server]' && useradd --system --uid 10001 instrumetry

USER instrumetry
ENTRYPOINT ["instrumetry"]
CMD ["--help"]
