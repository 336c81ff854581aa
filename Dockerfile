# Production-like image: the API on port 8000 against an external PostgreSQL (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# CPU build of torch by default; pass --build-arg TORCH_INDEX_URL=... for a CUDA build on GPU hosts.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
WORKDIR /app
RUN pip install "torch==2.13.0" --index-url "${TORCH_INDEX_URL}"
COPY pyproject.toml README.md alembic.ini ./
COPY alembic ./alembic
COPY privacy ./privacy
COPY engine ./engine
COPY matchsvc ./matchsvc
COPY api ./api
# Editable install: migrations are read from /app/alembic at run time.
RUN pip install -e ".[ray]"
RUN useradd --system --uid 10001 matchsvc && mkdir -p /data && chown matchsvc /data
USER matchsvc
ENV MATCHSVC_DATA_DIR=/data
EXPOSE 8000
CMD ["matchsvc", "serve", "--host", "0.0.0.0", "--port", "8000"]
