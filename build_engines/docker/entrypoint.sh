#!/bin/sh
# Serve the model repository with the GB10 configs, or run any other command in the image
# (for example the engine build: python3 -m build_engines gb10 ...).
set -eu

if [ "$#" -gt 0 ] && [ "$1" != "serve" ]; then
    exec "$@"
fi
[ "$#" -gt 0 ] && shift

: "${SPARK_ENGINE_DIR:=/engines/gb10}"
export SPARK_ENGINE_DIR
if [ ! -f "$SPARK_ENGINE_DIR/manifest.json" ]; then
    echo "no engines at $SPARK_ENGINE_DIR (manifest.json missing): mount engines/gb10 there, or build them with" >&2
    echo "  docker run --gpus all -v <models>:/models:ro -v <repo>/engines:/engines <image> \\" >&2
    echo "    python3 -m build_engines gb10 --llm /models/<checkpoint> --out /engines/gb10" >&2
    exit 2
fi

# Ports match spark_runtime.serve: gRPC on 8100 because VTube Studio owns 8001.
exec tritonserver \
    --model-repository=/opt/spark/model_repository \
    --model-config-name=gb10 \
    --http-port=8000 --grpc-port=8100 --metrics-port=8002 \
    --allow-metrics=true --strict-readiness=true --exit-timeout-secs=10 \
    --backend-config=python,shm-default-byte-size=67108864 \
    --backend-config=python,shm-growth-byte-size=67108864 \
    "$@"
