"""Request bodies that more than one endpoint reads: `/rank`'s, which `/explain` extends (`explaining.py`). The /docs
page shows their fields and descriptions, so they are the service's contract."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RankPaths(BaseModel):
    """Rank videos on the server: paths inside an --allow-root folder (relative paths start from the first)."""

    image: str = Field(description="conditioning image", examples=["cats/cat.png"])
    videos: list[str] = Field(description="candidate videos of that image", examples=[["cats/a.mp4", "cats/b.mp4"]])
    num_frames: int | None = Field(None, description="frames sampled from each video (default: the model's)")
    prompt: str | None = Field(None, description="the prompt the videos were made from (text head, guidance)")
    head: str | None = Field(None, description="which head ranks them (default: the served model's own)")
