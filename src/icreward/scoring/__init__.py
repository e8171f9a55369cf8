"""Scoring: the engine (`score_items` for files, `score_tensors` for in-memory batches, one scorer or several),
manifest runs into a resumable JSONL file, and best-of-N ranking.

```python
from icreward.scoring import Item, score_items
for result in score_items(icreward.load(), [Item("a", Path("img.png"), Path("vid.mp4"))]):
    print(result.key, result.reward, result.error)
```
"""

from icreward.scoring.engine import Item, ItemResult, batch_rewards, score_items, score_tensors, shape_batches
from icreward.scoring.rank import rank_videos
from icreward.scoring.resumable import partial_path, score_manifest, score_manifest_to_file

__all__ = [
    "Item",
    "ItemResult",
    "batch_rewards",
    "partial_path",
    "rank_videos",
    "score_items",
    "score_manifest",
    "score_manifest_to_file",
    "score_tensors",
    "shape_batches",
]
