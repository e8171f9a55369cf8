"""`icreward.load(name)`: any reward by name, the shipped default, a checkpoint folder or hub id, or a metric.

The top of the import graph: it imports `icreward.metrics` and `icreward.models`, which import only downward
(`icreward.interface` holds the base class and the metric registry they use).
"""

from __future__ import annotations

from pathlib import Path

from icreward.errors import UnknownModelError
from icreward.interface import Scorer, metric_factory, registered_metrics
from icreward.rules import DEFAULT_MODEL


def list_metrics(offline_only: bool = False) -> list[str]:
    """Names of the registered metrics; `offline_only` keeps those that need no pretrained weights.

    Factories are registered as Scorer subclasses, so `needs_weights` is read off the class.
    """
    import icreward.metrics  # noqa: F401  (registers the metrics)

    metrics = registered_metrics()
    return sorted(n for n, f in metrics.items() if not (offline_only and getattr(f, "needs_weights", False)))


def default_checkpoint() -> Path:
    """The folder of the checkpoint shipped inside the package (what `load("default")` loads)."""
    return Path(__file__).parent / "default_model"


def load(name: str = DEFAULT_MODEL, **kwargs) -> Scorer:
    """Load a scorer by name: `default` for the shipped model, `metric:<name>` for a handcrafted metric, else a
    checkpoint folder or hub id."""
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
