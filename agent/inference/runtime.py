"""The TFLite interpreter: LiteRT (`ai-edge-litert`) by default, `tflite-runtime` as a fallback.

tflite-runtime is frozen at 2.14 and crashes under NumPy 2, so it is only tried when LiteRT is
not installed (e.g. an old image pinned to NumPy 1).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)


class RuntimeMissing(RuntimeError):
    """Neither LiteRT nor tflite-runtime can be imported."""


def _import() -> tuple[str, Any]:
    try:
        from ai_edge_litert import interpreter as litert

        return "ai-edge-litert", litert
    except ImportError as litert_error:
        try:
            import tflite_runtime.interpreter as tflite_rt

            return "tflite-runtime", tflite_rt
        except ImportError:
            raise RuntimeMissing(
                "no TFLite runtime: install ai-edge-litert (pip install ai-edge-litert); "
                f"tflite-runtime is accepted as a fallback ({litert_error})"
            ) from None


def runtime_name() -> str:
    """Which runtime this station uses, e.g. "ai-edge-litert 2.3.0"."""
    name, _module = _import()
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{name} {version(name)}"
    except PackageNotFoundError:
        return name


def make_interpreter(model: bytes, *, threads: int = 1, xnnpack: bool = True) -> Any:
    """A ready interpreter (tensors allocated) for a .tflite flatbuffer.

    XNNPACK is LiteRT's default CPU delegate; `xnnpack=False` asks for the builtin kernels only.
    Raises ValueError for a model the runtime refuses.
    """
    _name, module = _import()
    kwargs: dict[str, Any] = {"model_content": model, "num_threads": max(1, threads)}
    if not xnnpack:
        kwargs["experimental_op_resolver_type"] = (
            module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    try:
        with _native_stderr_to_log():
            interpreter = module.Interpreter(**kwargs)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"the TFLite runtime refused the model: {_first_line(exc)}") from None
    return interpreter


@contextlib.contextmanager
def _native_stderr_to_log() -> Iterator[None]:
    """LiteRT's C++ prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." straight to
    fd 2; catch fd 2 while an interpreter is made and pass its lines through our logging."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:  # a file, not a pipe: a writer can never block
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode(errors="replace").splitlines():
                if line.startswith("INFO: "):
                    log.debug("litert: %s", line.removeprefix("INFO: "))
                elif line.strip():
                    log.warning("litert: %s", line)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
