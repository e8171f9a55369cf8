"""`icreward.load(name)`: any reward by name, the shipped default, a checkpoint folder or hub id, or a metric.

The top of the import graph: it imports `icreward.metrics` and `icreward.models`, which import only downward
(`icreward.interface` holds the base class and the metric registry they use).
"""

from __future__ import annotations

from pathlib import Path

from icreward.errors import UnknownModelError
from icreward.interface import Scorer, metric_factory, registered_metrics
from icreward.rules import DEFAULT_MODEL


def list_metrics(offline_only: bool = False, dimension: str | None = None) -> list[str]:
    """Names of the registered metrics; `offline_only` keeps those that need no pretrained weights, `dimension`
    those of one head's dimension (`consistency`, `motion`, `text`).

    Factories are registered as Scorer subclasses, so `needs_weights` and `dimension` are read off the class.
    """
    import icreward.metrics  # noqa: F401  (registers the metrics)

    metrics = registered_metrics()
    return sorted(
        n
        for n, f in metrics.items()
        if not (offline_only and getattr(f, "needs_weights", False))
        and (dimension is None or getattr(f, "dimension", "consistency") == dimension)
    )


def default_checkpoint() -> Path:
    """The folder of the checkpoint shipped inside the package (what `load("default")` loads)."""
    return Path(__file__).parent / "default_model"


def load(name: str = DEFAULT_MODEL, head: str | None = None, **kwargs) -> Scorer:
    """Load a scorer by name: `default` for the shipped model, `metric:<name>` for a handcrafted metric, else a
    checkpoint folder or hub id. `head` selects the head a call returns (`Scorer.select_head`; default: the
    scorer's own, `consistency` for a model)."""
    scorer = _load(name, **kwargs)
    return scorer if head is None else scorer.select_head(head)


def _load(name: str, **kwargs) -> Scorer:
    if name == DEFAULT_MODEL:  # a folder named "default" in the working directory is `./default`
        name = str(default_checkpoint())
    if name.startswith("metric:"):
        metric = name.split(":", 1)[1]
        known = list_metrics()
        if metric not in known:
            raise UnknownModelError(f"unknown metric {metric!r}; known: {', '.join(known)}")
        return metric_factory(metric)(**kwargs).eval()
    from icreward.models import load_checkpoint

    if not Path(name).exists() and "/" not in name:
        raise UnknownModelError(
            f"cannot load model {name!r}: no such checkpoint folder; give `default`, a checkpoint folder, a hub id "
            f"(owner/name) or metric:<name> ({', '.join(list_metrics())})"
        )
    return load_checkpoint(name, **kwargs).eval()
