"""Training learned rewards: `train(config, train_manifest, val_manifest) -> TrainResult`, k-fold cross-validation,
and `icreward train`. Beside the library (models, losses), which never imports it.

```python
from icreward.training import TrainConfig, train, train_kfold, aggregate_folds
result = train(TrainConfig(out="runs/a", loss="btt", epochs=5), "train.jsonl", "val.jsonl")
folds = train_kfold(TrainConfig(out="runs/cv", epochs=5), "all.jsonl", k=5)
print(aggregate_folds(folds)["best_val_accuracy"])  # {"mean", "std", "values"}
```

Modules: `config` (TrainConfig), `data` (examples, datasets, batch order, data hashes, the feature cache), `step`
(what one step computes: objective, the loss, statistics), `trainer` (the loop and its setup), `rundir` (the run
folder: resume state, metrics log, the published checkpoint) and `kfold` (cross-validation by source image).
`trainer`'s docstring follows one training step through them.

Names are imported on first use, so the command line's `--help` does not load torch.
"""

from __future__ import annotations

from typing import Any

from icreward.training.config import TrainConfig

_LAZY = {
    "TrainResult": "icreward.training.trainer",
    "train": "icreward.training.trainer",
    "train_kfold": "icreward.training.kfold",
    "kfold_split": "icreward.training.kfold",
    "aggregate_folds": "icreward.training.kfold",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["TrainConfig", "TrainResult", "aggregate_folds", "kfold_split", "train", "train_kfold"]
