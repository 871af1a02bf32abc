# Two images from one file: a slim API (no torch, no onnxruntime: it never loads a model) and
# a worker with the ML stack.
#   API:         docker build --target api -t distillery-api .
#   CPU worker:  docker build --target worker -t distillery-worker:cpu .
#   GPU worker:  docker build --target worker -t distillery-worker:gpu \
#                  --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 \
#                  --build-arg ONNXRUNTIME=onnxruntime-gpu .
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --system --uid 10001 --home-dir /var/lib/distillery --create-home distillery
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY worker ./worker
COPY migrations ./migrations
COPY distillery ./distillery

FROM base AS api
RUN pip install ".[server]" && rm -rf /src
USER distillery
# Not /src: `python -m celery` puts the working directory first on sys.path.
WORKDIR /var/lib/distillery
ENV DISTILLERY_DATA_DIR=/var/lib/distillery \
    DISTILLERY_API_HOST=0.0.0.0 \
    DISTILLERY_API_PORT=8000
EXPOSE 8000
CMD ["distillery", "api"]

FROM base AS worker
# Where torch comes from: the CPU wheels by default, a CUDA index for the GPU image; and
# which onnxruntime runs ONNX teachers (onnxruntime-gpu has the CUDA provider).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG ONNXRUNTIME=onnxruntime
# torch first and pinned, from TORCH_INDEX: installed after the rest, pip would resolve it from
# PyPI instead (several GB of CUDA packages even for the CPU image).
RUN pip install --index-url "${TORCH_INDEX}" torch==2.13.0
# torch==2.13.0 is already satisfied (2.13.0+cpu / +cuXXX match it), so this adds the rest.
RUN pip install ".[server,worker]" \
    && if [ "${ONNXRUNTIME}" != "onnxruntime" ]; then \
         pip uninstall -y onnxruntime && pip install "${ONNXRUNTIME}"; \
       fi \
    && rm -rf /src
USER distillery
WORKDIR /var/lib/distillery
ENV DISTILLERY_DATA_DIR=/var/lib/distillery
CMD ["distillery", "worker"]
