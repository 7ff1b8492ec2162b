# The tutorloop loop (student side): evaluation, retrieval, LoRA training. The teacher and Qdrant run
# as their own services (compose.yaml). PyPI's default Linux torch wheel is the CUDA build.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY agents ./agents
COPY retrieval ./retrieval
COPY training ./training
COPY prompts ./prompts
COPY demo ./demo
RUN pip install "torch==2.13.0" && pip install .

WORKDIR /work
ENTRYPOINT ["tutorloop"]
CMD ["--help"]
