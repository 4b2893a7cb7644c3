# syntax=docker/dockerfile:1
# The base image by exact version (add its digest, `@sha256:...`, where the registry is reachable).
FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
# The lock file first: its layer (every dependency, each file's hash checked) is reused until
# the pins change.
COPY requirements.txt ./
RUN pip install --no-cache-dir --prefix=/install --require-hashes -r requirements.txt
COPY pyproject.toml README.md ./
COPY bot ./bot
RUN pip install --no-cache-dir --prefix=/install --no-deps .

FROM python:3.11.14-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATABASE_URL=sqlite:////app/data/yarigai.db \
    FLOWS_DIR=/app/flows
RUN useradd --create-home --uid 10001 yarigai
WORKDIR /app
COPY --from=build /install /usr/local
COPY flows ./flows
RUN mkdir -p /app/data && chown yarigai:yarigai /app/data
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/healthz\", timeout=2)"]
CMD ["yarigai", "serve"]
