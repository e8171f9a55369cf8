"""icreward: learned and handcrafted image-to-video consistency rewards.

```python
import icreward
model = icreward.load("default")              # or a checkpoint folder / hub id / "metric:<name>"
reward = model.score("img.png", "video.mp4")  # float, higher = more consistent
with icreward.autocast(model, "bf16"):       # bf16 autocast on the model's device; see icreward.precision
    rewards = model(images, videos).float()
```

The names below load lazily, so `import icreward.cli` (and `icreward --help`) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from icreward.version import __version__

__all__ = ["Scorer", "RewardFunction", "load", "list_metrics", "autocast", "retain_freed_memory", "__version__"]

if TYPE_CHECKING:
    from icreward.allocator import retain_freed_memory
    from icreward.guidance import RewardFunction
    from icreward.interface import Scorer
    from icreward.loading import list_metrics, load
    from icreward.precision import autocast

_LAZY = {
    "Scorer": "icreward.interface",
    "RewardFunction": "icreward.guidance",
    "load": "icreward.loading",
    "list_metrics": "icreward.loading",
    "autocast": "icreward.precision",
    "retain_freed_memory": "icreward.allocator",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'icreward' has no attribute {name!r}")
