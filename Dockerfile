# One image for the API and the workers.
#   CPU:  docker build -t distillery:cpu .
#   GPU:  docker build -t distillery:gpu --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
FROM python:3.11-slim

# Where torch comes from: the CPU wheels by default, a CUDA index for the GPU image.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first and pinned, from TORCH_INDEX: installed after the rest, pip would resolve it from
# PyPI instead (several GB of CUDA packages even for the CPU image). Its own layer, so code
# changes do not reinstall it.
RUN pip install --index-url "${TORCH_INDEX}" torch==2.13.0

WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY worker ./worker
COPY migrations ./migrations
# torch==2.13.0 is already satisfied (2.13.0+cpu / +cuXXX match it), so this adds the rest only.
RUN pip install . && rm -rf /src

RUN useradd --system --uid 10001 --home-dir /var/lib/distillery --create-home distillery
USER distillery
# Not /src: `python -m celery` puts the working directory first on sys.path.
WORKDIR /var/lib/distillery

ENV DISTILLERY_DATA_DIR=/var/lib/distillery \
    DISTILLERY_API_HOST=0.0.0.0 \
    DISTILLERY_API_PORT=8000

EXPOSE 8000
CMD ["distillery", "api"]
