"""VBench-I2V evaluation results -> one pointwise manifest per dimension.

Inputs (VBench's own files, unchanged):

- `<name>_eval_results.json`: `{dimension: [aggregate, [{"video_path", "video_results", ...}, ...]]}`. The I2V
  dimensions (`i2v_subject`, `i2v_background`) add `image_path` to each entry; `camera_motion` has three items
  (average, a per-type dict, then the per-video list, whose entries add `prompt_type` and `predict_type`);
  `dynamic_degree` gives a boolean per video (imported as 1.0 / 0.0).
- `vbench2_i2v_full_info.json`: a list of `{"prompt_en", "dimension": [...], "image_type", "image_name"}`. Videos are
  named `<prompt_en>-<index>.mp4`, so a video's prompt is its file name less `-<index>`, and its image is that
  prompt's `image_name` (or `custom_image_path`) in the image folder. A camera-motion prompt
  (`"<caption>, camera pans left"`) without an image of its own takes the image of `<caption>`.

Each record is `{"id", "image", "video", "prompt", "score", "dimension", "results", "model", ...}`: `score` the
per-video value on VBench's 0-1 scale, `id` `<model>/<video file stem>` (`model` being the results file name less
`_eval_results.json`), `results` the results file name. The field `source` is left alone: in icreward it names the
source image a record was made from (k-fold folds group by it), not the file it came from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from icreward.importers.common import Issues, fail, finite_number, manifest_path

RESULTS_SUFFIX = "_eval_results.json"
SUMMARY_FILE = "import.json"
CAMERA_MOTIONS = ("pans left", "pans right", "tilts up", "tilts down", "zooms in", "zooms out", "static")
_CAMERA_SUFFIX = re.compile(", camera (" + "|".join(CAMERA_MOTIONS) + r")$")
_INDEXED = re.compile(r"(.+)-(\d+)")
_PASSED_THROUGH = ("prompt_type", "predict_type")  # camera_motion's per-video keys, kept as they are


@dataclass
class I2VInfo:
    """`vbench2_i2v_full_info.json`: each prompt's image (a name in the image folder, or an absolute custom path)."""

    path: Path
    images: dict[str, str] = field(default_factory=dict)  # prompt_en -> image_name / custom_image_path
    image_types: dict[str, str] = field(default_factory=dict)  # prompt_en -> image_type

    @classmethod
    def load(cls, path: str | Path) -> I2VInfo:
        path = Path(path)
        data = _read_json(path)
        if not isinstance(data, list):
            fail(path, None, f"expected a JSON list of prompt entries, got {type(data).__name__}")
        info = cls(path)
        for i, entry in enumerate(data):
            if not isinstance(entry, dict) or not isinstance(entry.get("prompt_en"), str):
                fail(path, f"entry {i}", 'expected an object with a string "prompt_en"')
            prompt = entry["prompt_en"]
            image = entry.get("image_name") or entry.get("custom_image_path")
            if image is not None:
                if not isinstance(image, str):
                    fail(path, f"entry {i}", f"image_name must be a string, got {image!r}")
                info.images.setdefault(prompt, image)
            if isinstance(entry.get("image_type"), str):
                info.image_types.setdefault(prompt, entry["image_type"])
        return info

    def image_for(self, prompt: str) -> str | None:
        """The image of `prompt`; a camera-motion prompt without one of its own takes its caption's."""
        if prompt in self.images:
            return self.images[prompt]
        m = _CAMERA_SUFFIX.search(prompt)
        return self.images.get(prompt[: m.start()]) if m else None

    def image_type(self, prompt: str) -> str | None:
        if prompt in self.image_types:
            return self.image_types[prompt]
        m = _CAMERA_SUFFIX.search(prompt)
        return self.image_types.get(prompt[: m.start()]) if m else None


def run_name(results: Path) -> str:
    """`R1` for `R1_eval_results.json`; the file stem for another name."""
    name = results.name
    return name[: -len(RESULTS_SUFFIX)] if name.endswith(RESULTS_SUFFIX) else results.stem


def read_vbench_results(path: str | Path) -> dict[str, list[Any]]:
    """{dimension: its per-video entries as in the file}, from VBench's layouts (2 items, or camera_motion's 3)."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        fail(path, None, f"expected a JSON object of dimension -> results, got {type(data).__name__}")
    out: dict[str, list[Any]] = {}
    for dim, value in data.items():
        if not isinstance(value, list) or len(value) not in (2, 3) or not isinstance(value[-1], list):
            fail(
                path,
                f'dimension "{dim}"',
                "expected [aggregate, [per-video results]] (camera_motion: [average, per-type, [per-video results]])",
            )
        out[dim] = value[-1]
    return out


def video_prompt(video_path: str) -> tuple[str, int | None]:
    """The prompt and sample index of a VBench video named `<prompt>-<index>.mp4` (index None when not named so)."""
    stem = Path(video_path.replace("\\", "/")).stem
    m = _INDEXED.fullmatch(stem)
    return (m.group(1), int(m.group(2))) if m else (stem, None)


def vbench_i2v_records(
    info: I2VInfo,
    results: Sequence[str | Path],
    videos: Sequence[str | Path],
    images: str | Path,
    out_dir: str | Path,
    issues: Issues | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """{dimension: pointwise records}, paths written relative to `out_dir` (where the manifests go).

    `videos` is one folder for every results file, or one per results file. An entry whose video, prompt or image
    cannot be resolved, or whose value is not a number, raises `ImportInputError` naming the results file and the
    video; with `issues.skip_bad` it is recorded in `issues.skipped` and left out.
    """
    issues = issues if issues is not None else Issues()
    results = [Path(r) for r in results]
    if len(videos) not in (1, len(results)):
        raise ValueError(f"give one videos folder, or one per results file ({len(results)}), not {len(videos)}")
    video_dirs = [Path(v) for v in videos] * (len(results) if len(videos) == 1 else 1)
    names = [run_name(r) for r in results]
    for i, name in enumerate(names):
        if name in names[:i]:
            fail(results[i], None, f'same run name "{name}" as {results[names.index(name)]}: ids would collide')
    images = Path(images)
    out: dict[str, list[dict[str, Any]]] = {}
    for path, name, video_dir in zip(results, names, video_dirs, strict=True):
        for dim, entries in read_vbench_results(path).items():
            records = out.setdefault(dim, [])
            seen = {r["id"] for r in records}
            for i, entry in enumerate(entries):
                record = _record(entry, dim, i, path, name, video_dir, images, info, Path(out_dir), issues)
                if record is not None and record["id"] in seen:
                    where = f"{dim}, video {entry['video_path']}"
                    issues.bad(path, where, f'the video is listed twice (id "{record["id"]}")')
                elif record is not None:
                    seen.add(record["id"])
                    records.append(record)
    return out


def _record(
    entry: Any,
    dim: str,
    i: int,
    path: Path,
    name: str,
    video_dir: Path,
    images: Path,
    info: I2VInfo,
    out_dir: Path,
    issues: Issues,
) -> dict[str, Any] | None:
    where = f"{dim} entry {i}"
    if not isinstance(entry, dict) or not isinstance(entry.get("video_path"), str) or not entry["video_path"]:
        issues.bad(path, where, 'expected an object with a "video_path" string')
        return None
    video_path = entry["video_path"]
    where = f"{dim}, video {video_path}"
    score = finite_number(entry.get("video_results"))
    if score is None or isinstance(entry.get("video_results"), str):
        issues.bad(path, where, f"video_results must be a number or true/false, got {entry.get('video_results')!r}")
        return None
    file_name = Path(video_path.replace("\\", "/")).name
    video = video_dir / file_name
    if not video.is_file() and Path(video_path).is_file():
        video = Path(video_path)
    if not video.is_file():
        issues.bad(path, where, f"video not found: {video}")
        return None
    prompt, index = video_prompt(video_path)
    image_name = info.image_for(prompt)
    if image_name is None and isinstance(entry.get("image_path"), str):
        image_name = Path(entry["image_path"].replace("\\", "/")).name
    if image_name is None:
        issues.bad(path, where, f'cannot find its image: the prompt "{prompt}" is not in {info.path} with an image')
        return None
    image = Path(image_name) if Path(image_name).is_absolute() else images / image_name
    if not image.is_file():
        issues.bad(path, where, f"image not found: {image}")
        return None
    record: dict[str, Any] = {
        "id": f"{name}/{Path(file_name).stem}",
        "image": manifest_path(image, out_dir),
        "video": manifest_path(video, out_dir),
        "prompt": prompt,
        "score": score,
        "dimension": dim,
        "results": path.name,
        "model": name,
    }
    if index is not None:
        record["index"] = index
    image_type = info.image_type(prompt)
    if image_type is not None:
        record["image_type"] = image_type
    record.update((k, entry[k]) for k in _PASSED_THROUGH if k in entry)
    return record


def _read_json(path: Path) -> Any:
    if not path.is_file():
        fail(path, None, "file not found" if not path.exists() else "not a regular file")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as err:
        fail(path, None, f"not UTF-8 text: {err}")
    except json.JSONDecodeError as err:
        fail(path, f"line {err.lineno}", f"malformed JSON: {err.msg} (column {err.colno})")


def write_vbench_i2v(
    out_dir: str | Path,
    records: dict[str, list[dict[str, Any]]],
    summary: dict[str, Any],
    *,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write `<dimension>.jsonl` for every dimension with records and `import.json`, as one atomic folder output.

    A dimension left with no record gets no file (an empty manifest does not load); its count is 0 in the summary.
    Returns the summary written.
    """
    from icreward.atomic import atomic_dir
    from icreward.manifest import write_manifest

    out_dir = Path(out_dir)
    for dim in records:
        if not dim or "/" in dim or "\\" in dim or dim.startswith("."):
            raise ValueError(f"dimension name {dim!r} cannot be a file name")
    previous = _previous_files(out_dir)
    summary = {**summary, "dimensions": {d: len(r) for d, r in records.items()}}
    summary["manifests"] = {d: f"{d}.jsonl" for d, r in records.items() if r}
    with atomic_dir(
        out_dir, own=previous, marker=(SUMMARY_FILE,), overwrite=overwrite, what="import", flag="--out"
    ) as tmp:
        for dim, recs in records.items():
            if recs:
                write_manifest(tmp / f"{dim}.jsonl", recs)
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary


def _previous_files(out_dir: Path) -> list[str]:
    """The files an earlier import wrote into `out_dir` (named in its import.json), so that a new one replaces them."""
    try:
        earlier = json.loads((out_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
        names = [str(n) for n in earlier.get("manifests", {}).values()]
    except (OSError, ValueError, AttributeError):
        return [SUMMARY_FILE]
    return [SUMMARY_FILE, *(n for n in names if "/" not in n and "\\" not in n and not n.startswith("."))]
