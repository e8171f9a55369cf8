"""Evaluation output: terminal tables, and the report folder (`results.json`, `pairs.csv`, `points.csv`).

`results` everywhere is `{model name: the dict evaluate_pairs / evaluate_points returned (merged)}`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from icreward.atomic import atomic_write
from icreward.evaluation.stats import _check_pairs, _nontie_credit, _tie_correct, predicted_labels
from icreward.rules import LABEL_NAMES

MISSING = "–"
BEST = "*"

# key -> (header, kind): "percent" (accuracies in [0, 1]) and "corr" (correlations) get a best marker;
# "number" (thresholds, timings, unknown keys) and "count" (sizes) do not
COLUMN_FORMATS: dict[str, tuple[str, str]] = {
    "pair_accuracy": ("pair acc %", "percent"),
    "pair_accuracy_ties": ("acc w/ ties % (val ε)", "percent"),
    "pair_accuracy_ties_test_swept": ("ties test-swept %", "percent"),
    "pair_accuracy_seen": ("seen modes %", "percent"),
    "pair_accuracy_heldout": ("held-out modes %", "percent"),
    "spearman": ("Spearman", "corr"),
    "kendall": ("Kendall", "corr"),
    "pearson": ("Pearson", "corr"),
    "tie_threshold": ("ε (val)", "number"),
    "n_pairs": ("n", "count"),
    "n_nontie_pairs": ("n non-tie", "count"),
    "n_points": ("n points", "count"),
}
DEFAULT_COLUMNS = (
    "pair_accuracy",
    "pair_accuracy_ties",
    "pair_accuracy_ties_test_swept",
    "spearman",
    "kendall",
    "n_pairs",
)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and math.isfinite(float(value))


def _number(value: float, kind: str) -> str:
    if kind == "percent":
        return f"{100 * value:.1f}"
    if kind == "corr":
        return f"{value:.3f}"
    if kind == "count":
        return f"{int(value)}"
    return f"{value:.4g}"


def _cell(result: Mapping[str, Any], key: str, kind: str) -> tuple[str, float | None]:
    """The cell text without marker, and the displayed value the best marker compares (None: nothing shown)."""
    value = result.get(key)
    if not _finite(value):
        return MISSING, None
    text = _number(value, kind)
    ci = result.get(f"{key}_ci")
    if ci is not None and all(_finite(v) for v in ci):
        text += f" [{_number(ci[0], kind)}, {_number(ci[1], kind)}]"
    return text, float(_number(value, kind))


def _marked(cells: Sequence[tuple[str, float | None]]) -> list[str]:
    """Cell texts with BEST on every cell holding the highest displayed value, where at least two compete.

    Unmarked cells get a blank of the marker's width, so numbers stay aligned.
    """
    shown = [v for _, v in cells if v is not None]
    best = max(shown) if len(shown) >= 2 else None
    return [text + (BEST if value is not None and value == best else " " * len(BEST)) for text, value in cells]


def _render(header: Sequence[str], rows: Sequence[Sequence[str]], footer: str) -> str:
    """Fixed-width text: first column left-aligned, the others right-aligned."""
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows), footer])


def format_table(results: Mapping[str, Mapping[str, Any]], columns: Sequence[str] = DEFAULT_COLUMNS) -> str:
    """One row per model; accuracies in percent as `72.4 [68.1, 76.5]` (point estimate [bootstrap interval]).

    `columns` are keys of the result dicts (headers and number formats from COLUMN_FORMATS; unknown keys are shown
    as plain numbers). The best value per accuracy or correlation column (highest, as displayed) is marked `*`.
    NaN or absent values show as `–`.
    """
    rows = [[name] for name in results]
    for key in columns:
        kind = COLUMN_FORMATS.get(key, (key, "number"))[1]
        cells = [_cell(result, key, kind) for result in results.values()]
        texts = _marked(cells) if kind in ("percent", "corr") else [text for text, _ in cells]
        for row, text in zip(rows, texts, strict=True):
            row.append(text)
    header = ["model", *(COLUMN_FORMATS.get(key, (key, "number"))[0] for key in columns)]
    footer = (
        f"{BEST} best per column; [lo, hi] bootstrap interval; val ε: tie threshold chosen on validation data; "
        "test-swept: ε maximised on the test set itself (optimistic)."
    )
    return _render(header, rows, footer)


def format_per_mode_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Rows = failure modes (or other groups in `per_mode`), columns = models: accuracy % without ties (n pairs).

    The best model per mode is marked with `*`; a model with no non-tie pair of that mode shows `–`.
    """
    modes = sorted({mode for result in results.values() for mode in result.get("per_mode", {})})
    rows = []
    for mode in modes:
        cells = []
        for result in results.values():
            value = result.get("per_mode", {}).get(mode)
            n = result.get("per_mode_n", {}).get(mode)
            if not _finite(value):
                cells.append((MISSING, None))
                continue
            text = _number(value, "percent") + (f" (n={n})" if n is not None else "")
            cells.append((text, float(_number(value, "percent"))))
        rows.append([mode, *_marked(cells)])
    footer = f"{BEST} best per mode; pair accuracy % without ties (n: non-tie pairs)."
    return _render(["mode", *results], rows, footer)


def format_heads_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """Rows = (model, head), each head judged against the labels of its own dimension: pair accuracy % without ties
    (n: non-tie pairs) and the static test (how often a frozen copy of the image scores at least as high as the real
    videos, lower is better). Empty when no model has heads results."""
    rows = []
    for name, result in results.items():
        statics = result.get("static_wins", {})
        for head in dict.fromkeys([*result.get("heads", {}), *statics]):
            r = result.get("heads", {}).get(head, {})
            accuracy = r.get("pair_accuracy")
            n = r.get("n_nontie_pairs", r.get("n_pairs"))
            static = statics.get(head, {})
            rows.append(
                [
                    name,
                    head,
                    (_number(accuracy, "percent") + (f" (n={n})" if n is not None else "")) if _finite(accuracy)
                    else MISSING,
                    f"{_number(static['rate'], 'percent')} (n={static['n']})" if static else MISSING,
                ]
            )  # fmt: skip
    if not rows:
        return ""
    footer = "labels: consistency <- ic (or label), motion <- motion, text <- text, guidance <- overall."
    return _render(["model", "head", "pair acc % (own labels)", "frozen copy wins %"], rows, footer)


def build_pair_rows(
    model: str,
    ids: Sequence[str],
    labels: np.ndarray,
    reward_a: np.ndarray,
    reward_b: np.ndarray,
    *,
    tie_threshold: float | None = None,
    extra: Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """`pairs.csv` rows of one model, scored with the same rules as `stats` (labels +1 A, -1 B, 0 tie).

    Each row: model, id, label ("A"/"B"/"tie"), reward_a, reward_b, delta, predicted (sign of delta; "tie" only
    for delta == 0), correct (1, 0, or 0.5 for delta == 0; None on human ties, so the mean of the non-empty
    values is `pair_accuracy`); with `tie_threshold`, also predicted_ties and correct_ties (1/0, mean =
    `pair_accuracy_ties`). `extra[i]` adds pass-through keys to row i (e.g. mode_a, mode_b, severity_a); the
    computed keys above win over extra keys of the same name.
    """
    reward_a = np.asarray(reward_a, dtype=np.float64)
    reward_b = np.asarray(reward_b, dtype=np.float64)
    delta, labels = _check_pairs(reward_a - reward_b, labels)
    if len(ids) != delta.size or (extra is not None and len(extra) != delta.size):
        raise ValueError(f"ids and extra must have one entry per pair ({delta.size})")
    credit = _nontie_credit(delta, labels)
    tie_correct = None if tie_threshold is None else _tie_correct(delta, labels, tie_threshold)
    rows = []
    for i in range(delta.size):
        row: dict[str, Any] = {
            "model": model,
            "id": ids[i],
            "label": LABEL_NAMES[labels[i]],
            "reward_a": float(reward_a[i]),
            "reward_b": float(reward_b[i]),
            "delta": float(delta[i]),
            "predicted": LABEL_NAMES[int(np.sign(delta[i]))],
            "correct": float(credit[i]) if labels[i] != 0 else None,
        }
        if tie_correct is not None:
            row["predicted_ties"] = LABEL_NAMES[int(predicted_labels(delta[i], tie_threshold))]
            row["correct_ties"] = int(tie_correct[i])
        if extra is not None:
            row.update({k: v for k, v in extra[i].items() if k not in row})
        rows.append(row)
    return rows


def _jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars and arrays unwrapped, tuples as lists, NaN and infinities as None."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _csv_cell(value: Any) -> Any:
    value = _jsonable(value)
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, dict | list) else value


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Header = every key in first-seen order; missing keys, None and NaN are empty cells."""
    fieldnames = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_write(path) as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _csv_cell(v) for k, v in row.items()} for row in rows)


def write_report(
    report_dir: str | Path,
    results: Mapping[str, Mapping[str, Any]],
    pair_rows: Sequence[Mapping[str, Any]],
    point_rows: Sequence[Mapping[str, Any]] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Write `results.json` (`{"models": results, "meta": meta}`, NaN as null), `pairs.csv` and, when given,
    `points.csv` into `report_dir`, each file atomically.
    """
    report_dir = Path(report_dir)
    document = _jsonable({"models": results, "meta": meta or {}})
    with atomic_write(report_dir / "results.json") as f:
        json.dump(document, f, indent=2, allow_nan=False, ensure_ascii=False)
        f.write("\n")
    _write_csv(report_dir / "pairs.csv", pair_rows)
    if point_rows is not None:
        _write_csv(report_dir / "points.csv", point_rows)
