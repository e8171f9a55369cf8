"""A manifest run split over the processes of a launcher (`torchrun`, `accelerate launch`): the same
`icreward score --manifest M --out O` command, one shard of the records per process.

The launcher's environment (`WORLD_SIZE`, `RANK`, `LOCAL_RANK`) says how many processes there are. Process `r` of
`w` scores the records `i` with `i % w == r` (round robin: a manifest grouped by source, generator or video length
still gives every process an equal share of slow and fast records) and appends each result to its own side file,
`O.partial.rank<r>-of-<w>.jsonl`, flushed at once and fsynced like the single-process side file. After a barrier,
process 0 merges every side file (and the manifest's invalid lines) into `O` in input order, the same bytes a
single process writes, atomically, and removes the side files. `--resume` keeps the finished lines of any side
file of `O` (single-process or of any world size), so a run may resume with another number of processes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from icreward.interface import Scorer
from icreward.scoring.resumable import (
    SideFile,
    check_output_paths,
    finished_lines,
    iter_manifest_records,
    rank_partial_path,
    reward_videos,
    side_files,
)

FAULT_ENV = "ICREWARD_SCORE_FAULT_AFTER"  # test hook: "N" or "N:R" (only rank R) -> SIGKILL after N results


def world() -> tuple[int, int, int]:
    """(world size, rank, local rank) from the launcher's environment; (1, 0, 0) without a launcher."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    local = int(os.environ.get("LOCAL_RANK", str(rank)) or 0)
    return size, rank, local


def device_for_rank(device: str, local_rank: int) -> str:
    """`cuda` means this process's own GPU (`cuda:<LOCAL_RANK>`) under a launcher; other devices are kept."""
    return f"cuda:{local_rank}" if device == "cuda" else device


class ProcessGroup:
    """torch.distributed for barriers: nccl where the device is CUDA, gloo otherwise; a long timeout, as the
    shards may finish far apart (a crashed process ends the others through the launcher, not the timeout)."""

    def __init__(self, device: str, local_rank: int):
        import torch
        import torch.distributed as dist

        self.dist = dist
        self.nccl = str(device).startswith("cuda") and torch.cuda.is_available()
        if self.nccl:
            torch.cuda.set_device(local_rank)
        self.local_rank = local_rank
        self.owned = not dist.is_initialized()
        if self.owned:
            dist.init_process_group("nccl" if self.nccl else "gloo", timeout=timedelta(days=7))

    def barrier(self) -> None:
        if self.nccl:
            self.dist.barrier(device_ids=[self.local_rank])
        else:
            self.dist.barrier()

    def close(self) -> None:
        if self.owned and self.dist.is_initialized():
            self.dist.destroy_process_group()


def _fault_after(rank: int) -> int:
    """The number of results after which this process kills itself (`FAULT_ENV`), 0 for never."""
    value = os.environ.get(FAULT_ENV, "")
    if not value:
        return 0
    count, _, only = value.partition(":")
    return int(count) if not only or int(only) == rank else 0


def _last_lines(path: Path) -> dict[str, str]:
    """id -> the last whole line of each id in a side file (errors included)."""
    lines: dict[str, str] = {}
    if not path.is_file():
        return lines
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            lines[record["id"]] = line.strip()
    return lines


def score_manifest_distributed(
    scorer: Scorer,
    manifest_path: str | Path,
    out: str | Path,
    *,
    group,
    rank: int,
    world_size: int,
    resume: bool = False,
    flush_every: int = 64,
    log: Callable[[str], None] | None = None,
    **kwargs,
) -> list[dict] | None:
    """Score this process's shard of the manifest into its side file; on rank 0, merge all shards into `out`
    (the bytes `score_manifest_to_file` writes) and return the records; other ranks return None.

    `group` has `barrier()`; every process of the run calls this with the same arguments but its `rank`.
    """
    from icreward.atomic import check_output_file
    from icreward.manifest import load_manifest

    check_output_paths(manifest_path, out)
    out = Path(out)
    mine = rank_partial_path(out, rank, world_size)
    check_output_file(mine, inputs={"manifest": manifest_path})
    manifest = load_manifest(manifest_path, skip_bad=True, check_files=False)
    if not resume and rank == 0:  # stale results of an earlier run (any world size) must not be merged
        for path in side_files(out):
            path.unlink(missing_ok=True)
    group.barrier()
    kept: set[str] = set()
    if resume:
        finished = dict(finished_lines(out))
        for path in side_files(out):
            finished.update(finished_lines(path))
        kept = {
            rec.id
            for rec in manifest.records
            if all(key in finished.get(rec.id, ("", {}))[1] for key, _ in reward_videos(rec))
        }
        if log is not None:
            log(
                f"resuming: {len(kept)} of {len(manifest.records)} records already scored in {out} / "
                f"{len(side_files(out))} side file(s)"
            )
    group.barrier()  # everyone has read the earlier results before anyone appends
    shard = dataclasses.replace(manifest, records=manifest.records[rank::world_size], skipped=[])
    if log is not None:
        todo = sum(rec.id not in kept for rec in shard.records)
        log(f"{world_size} processes: this one scores {todo} of its {len(shard.records)} records")
    fault = _fault_after(rank)
    sidefile = SideFile(mine, flush_every)
    written = 0
    try:
        for _, record in iter_manifest_records(scorer, shard, skip=kept, **kwargs):
            sidefile.append(json.dumps(record))  # errors too: rank 0 merges them; a resume scores them again
            written += 1
            if fault and written >= fault:
                sidefile.close()
                os.kill(os.getpid(), signal.SIGKILL)
    finally:
        sidefile.close()
    group.barrier()
    if rank != 0:
        return None
    return _merge(manifest, out, resume, world_size)


def _merge(manifest, out: Path, resume: bool, world_size: int) -> list[dict]:
    """Rank 0: one line per manifest line, in input order, from the finished lines of `out` (on resume) and of
    every side file, else the error line this run wrote; `out` written atomically, the side files removed."""
    from icreward.atomic import atomic_write
    from icreward.errors import IcrewardError

    paths = side_files(out)
    current = [p for p in paths if p.name.endswith(f"-of-{world_size}{out.suffix or '.jsonl'}")]
    paths = [p for p in paths if p not in current] + current  # this run's error lines win over older ones
    finished = dict(finished_lines(out)) if resume else {}
    last: dict[str, str] = {}
    for path in paths:
        finished.update(finished_lines(path))
        last.update(_last_lines(path))
    rows: list[tuple[int, str]] = [
        (err.line or 0, json.dumps({"id": err.record_id, "line": err.line, "error": err.reason}))
        for err in manifest.skipped
    ]
    for rec in manifest.records:
        line, record = finished.get(rec.id, ("", {}))
        if not all(key in record for key, _ in reward_videos(rec)):
            line = last.get(rec.id, "")
            if not line:
                raise IcrewardError(f"no result for id {rec.id} in the side files of {out}; run again with --resume")
        rows.append((rec.line, line))
    rows.sort(key=lambda row: row[0])
    with atomic_write(out) as f:
        for _, line in rows:
            f.write(line + "\n")
    for path in paths:
        path.unlink(missing_ok=True)
    return [json.loads(line) for _, line in rows]
