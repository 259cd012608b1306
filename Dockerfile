# One image for every SongSwipe process: the four services, the migration
# runner and the CLI. docker-compose.yml picks the command per service.
#
#   docker build -t songswipe .
#   docker run --rm songswipe songswipe --help

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
RUN pip install --no-cache-dir "uv==0.13.9"
WORKDIR /src

# Third-party dependencies first: this layer is reused until uv.lock changes.
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/pyproject.toml
COPY cli/pyproject.toml cli/pyproject.toml
COPY services/webhook/pyproject.toml services/webhook/pyproject.toml
COPY services/orchestrator/pyproject.toml services/orchestrator/pyproject.toml
COPY services/generator/pyproject.toml services/generator/pyproject.toml
COPY services/finalizer/pyproject.toml services/finalizer/pyproject.toml
RUN uv sync --frozen --all-packages --no-dev --no-install-workspace

# Then the project's own packages, installed as wheels (no source needed later).
COPY shared shared
COPY cli cli
COPY services services
RUN uv sync --frozen --all-packages --no-dev --no-editable

FROM python:${PYTHON_VERSION}-slim
# The services keep local state under .local/ of their working directory
# (the orchestrator's faust data); the songs go to a volume at /data/songs.
RUN useradd --create-home --uid 10001 songswipe \
    && mkdir -p /data/songs /app/.local \
    && chown songswipe: /data/songs /app/.local
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY supabase/migrations /app/supabase/migrations
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SONGSWIPE_MIGRATIONS_DIR=/app/supabase/migrations \
    SONGS_DIR=/data/songs \
    LOG_FORMAT=json
USER songswipe
CMD ["songswipe", "--help"]
