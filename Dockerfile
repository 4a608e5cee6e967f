# syntax=docker/dockerfile:1.7
# Two images from one file (docker-compose.yml builds both):
#   api     the REST API and migrations; no torch (the service never imports it)
#   worker  the Celery workers and beat; torch with CUDA
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --create-home --uid 10001 bottlelens \
    && mkdir -p /data/storage && chown bottlelens /data/storage
WORKDIR /app
# What service/ and workers/ import besides torch and the analysis library.
RUN pip install "celery[redis]>=5.4,<6" "kombu>=5.4" "sqlalchemy>=2.0" "alembic>=1.13" \
    "psycopg[binary]>=3.1" "pydantic>=2.6" "pydantic-settings>=2.2" "fastapi>=0.110" \
    "uvicorn[standard]>=0.29" "python-multipart>=0.0.9" "httpx>=0.27" "typer>=0.12" \
    "rich>=13"
COPY pyproject.toml README.md alembic.ini ./
COPY analysis ./analysis
COPY service ./service
COPY workers ./workers
COPY migrations ./migrations

FROM base AS api
# --no-deps: the package's own dependencies (torch, numpy, ...) stay out.
# Editable (-e): `bottlelens db upgrade` finds alembic.ini and migrations/ beside the
# packages, in /app.
RUN pip install --no-deps -e .
USER bottlelens
EXPOSE 8000
CMD ["uvicorn", "service.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS worker
# PyPI's Linux wheel of torch is the CUDA build.
ARG TORCH_VERSION=2.13.0
RUN pip install "torch==${TORCH_VERSION}" && pip install -e .
USER bottlelens
CMD ["celery", "-A", "workers.celery_app", "worker", "-Q", "gpu,cpu", "-c", "1"]
