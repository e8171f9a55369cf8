"""Loading a diffusers image-to-video pipeline by name: a folder written by `save_pretrained`, a hub id, or one of the
tiny offline pipelines (`tiny-svd`, `tiny-wan-i2v`), with errors that say what is wrong and what works offline."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from icreward.errors import IcrewardError

TINY_PIPELINES = ("tiny-svd", "tiny-wan-i2v")
PIPELINE_DTYPES = ("fp32", "bf16", "fp16")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class PipelineLoadError(IcrewardError):
    """A pipeline could not be loaded; the message names it and why."""


def load_pipeline(spec: str, *, dtype: str = "fp32", seed: int = 0, flag: str = "--pipeline") -> Any:
    """The diffusers pipeline `spec` names, its progress bar off.

    `spec`: `tiny-svd` / `tiny-wan-i2v` (random weights seeded by `seed`, `icreward.generation.tiny`), a folder
    holding `model_index.json` (what `save_pretrained` writes; loads offline), or a hub id `owner/name` (needs the
    network or the Hugging Face cache). `dtype`: the weights' precision, fp32, bf16 or fp16. Errors name `flag`."""
    import torch

    if dtype not in PIPELINE_DTYPES:
        raise PipelineLoadError(f"pipeline dtype: one of {', '.join(PIPELINE_DTYPES)}, got {dtype!r}")
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    if spec in TINY_PIPELINES:
        from icreward.generation.tiny import tiny_svd_pipeline, tiny_wan_i2v_pipeline

        pipe = tiny_svd_pipeline(seed) if spec == "tiny-svd" else tiny_wan_i2v_pipeline(seed)
        return pipe if dtype == "fp32" else pipe.to(dtype=torch_dtype)
    path = Path(spec)
    if path.exists():
        if not path.is_dir() or not (path / "model_index.json").is_file():
            raise PipelineLoadError(
                f"{flag} {spec}: not a diffusers pipeline folder (it has no model_index.json; write one with "
                "pipeline.save_pretrained(folder))"
            )
    elif not _HUB_ID.match(spec):
        raise PipelineLoadError(
            f"{flag} {spec}: no such folder, and not a hub id (owner/name); give a folder written by "
            f"save_pretrained, a hub id, or {' / '.join(TINY_PIPELINES)}"
        )
    from diffusers import DiffusionPipeline

    try:
        pipe = DiffusionPipeline.from_pretrained(spec, torch_dtype=torch_dtype)
    except Exception as e:  # diffusers and huggingface_hub raise many kinds (OSError, ValueError, HTTP errors)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        offline = "" if path.exists() else "; offline, a hub id loads only from the Hugging Face cache"
        raise PipelineLoadError(f"{flag} {spec}: cannot load a diffusers pipeline ({first[:300]}){offline}") from e
    pipe.set_progress_bar_config(disable=True)
    return pipe
