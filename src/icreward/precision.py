"""Inference precision: `fp32` (the default: no autocast at all, rewards bit-for-bit as before), `bf16` or `fp16`
autocast on the scorer's device. The one way every caller (the engine, `rank_videos`, the server, `model(image,
video)` callers) runs a scorer in reduced precision:

```python
import icreward
model = icreward.load("default")
with icreward.autocast(model, "bf16"):   # or a device: icreward.autocast("cuda", "fp16")
    rewards = model(images, videos).float()
```

The engine (`score_items`, `score_tensors`, `rank_videos`, the server) hands rewards back as float32; the
evidence read-out keeps its distances in float32 (`models/evidence.py`).
Imports torch only when a context is made, so the command line's `--help` stays light.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

from icreward.errors import IcrewardError

PRECISIONS = ("fp32", "bf16", "fp16")
PRECISION_HELP = "inference precision: fp32, or bf16/fp16 autocast where the device supports it (default: fp32)"


class PrecisionError(IcrewardError, ValueError):
    """An unknown precision, or one the device cannot autocast to."""


def check_precision(precision: str) -> str:
    """`precision` if it is one of `PRECISIONS`, else a `PrecisionError` naming them."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def _device_type(where: Any) -> str:
    import torch

    if isinstance(where, (str, torch.device)):
        return torch.device(where).type
    param = next(iter(where.parameters()), None) if hasattr(where, "parameters") else None
    return param.device.type if param is not None else "cpu"


def autocast(where: Any, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """A context running scorers in `precision` on a device (`where`: a device, its name, or a module, whose
    parameters' device is used; a module without parameters counts as cpu).

    `fp32` gives a context that does nothing. `bf16` / `fp16` give `torch.autocast(device_type, dtype)`; a precision
    the device cannot autocast to raises a one-line `PrecisionError` naming the device and what it supports.
    """
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    device_type = _device_type(where)
    if precision not in supported(device_type):
        raise PrecisionError(
            f"precision {precision} is not supported on {device_type}; it supports: {', '.join(supported(device_type))}"
        )
    return torch.autocast(device_type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def supported(device_type: str) -> list[str]:
    """The precisions `device_type` ("cpu", "cuda", "mps", ...) can run scorers in on this machine."""
    import torch

    found = ["fp32"]
    for precision, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                if not torch.amp.is_autocast_available(device_type):
                    continue
                if device_type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
                    continue
                torch.autocast(device_type, dtype=dtype)
        except (RuntimeError, UserWarning):
            continue
        found.append(precision)
    return found
