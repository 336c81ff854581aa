# Production-like image: the API on port 8000 against an external PostgreSQL (see docker-compose.yml).
# Two stages: `build` has a C compiler and turns the source into a wheel (the CPU scoring kernel,
# engine/scoring/_native.c, is compiled there); `runtime` installs that wheel and has no compiler.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY privacy ./privacy
COPY engine ./engine
COPY matchsvc ./matchsvc
COPY api ./api
COPY benchmarks ./benchmarks
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# CPU build of torch by default; pass --build-arg TORCH_INDEX_URL=... for a CUDA build on GPU hosts.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
WORKDIR /app
RUN pip install "torch==2.13.0" --index-url "${TORCH_INDEX_URL}"
COPY --from=build /wheels /wheels
RUN pip install "$(ls /wheels/matchsvc-*.whl)[ray]" && rm -rf /wheels
# Migrations are read from here at run time (the wheel holds the packages only).
COPY alembic.ini ./
COPY alembic ./alembic
ENV MATCHSVC_MIGRATIONS_DIR=/app/alembic
RUN useradd --system --uid 10001 matchsvc && mkdir -p /data && chown matchsvc /data
USER matchsvc
ENV MATCHSVC_DATA_DIR=/data
EXPOSE 8000
CMD ["matchsvc", "serve", "--host", "0.0.0.0", "--port", "8000"]
