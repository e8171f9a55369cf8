"""icreward: learned and handcrafted image-to-video consistency rewards."""

from icreward.scorer import Scorer, list_metrics, load

__version__ = "0.1.0"
__all__ = ["Scorer", "load", "list_metrics", "__version__"]
