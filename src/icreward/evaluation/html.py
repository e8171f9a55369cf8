"""The HTML report of an evaluation: `index.html` and its PNG plots, in one self-contained folder.

Inputs are what `icreward eval` builds: `results` `{model: evaluate_pairs / evaluate_points dict}` and `pair_rows`
(`report.build_pair_rows`, or `pairs.csv` read back: numbers may arrive as strings, empty cells as ""). Every
plot is drawn only when its data is there. Figures are matplotlib `Figure`s rendered straight to PNG bytes by the
Agg renderer (no pyplot, so no global state); matplotlib is imported only when a report is written.
"""

from __future__ import annotations

import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from icreward.atomic import atomic_write
from icreward.evaluation.report import COLUMN_FORMATS, MISSING, _cell, _finite
from icreward.evaluation.stats import bootstrap_ci
from icreward.rules import pair_failure_modes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

HOLDOUT_MARK = "†"
GROUP_COLORS = {"handcrafted": "#8c8c8c", "learned": "#1f77b4"}
MODEL_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
PART_COLORS = {"seen": "#4c72b0", "heldout": "#dd8452"}
TABLE_COLUMNS = ("pair_accuracy", "pair_accuracy_ties", "pair_accuracy_ties_test_swept", "spearman", "kendall")
MAX_PANELS = 8  # small multiples of the reward-vs-label plot
MAX_FRAMES = 8  # frames shown per attention strip, evenly spaced
MAX_POINTS = 400  # dots drawn per panel and label (a seeded subsample); boxes use every point
SEVERITY_BINS = 4
DPI = 110
FOLD_FIELDS = 8  # a nested setting with more fields than this is shown in a <details> block (open)


def _float(value: Any, default: float | None = None) -> float | None:
    """A finite float from a number or numeric string; `default` for None, "", NaN or text."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return default
    return x if math.isfinite(x) else default


def _failure_modes(row: Mapping[str, Any]) -> set[str]:
    """The failure modes of a pair's two videos, `none` and empty cells left out."""
    return set(pair_failure_modes(row.get("mode_a"), row.get("mode_b")))


def seen_vs_heldout(
    pair_rows: Sequence[Mapping[str, Any]], holdout_modes: Sequence[str], n_resamples: int = 1000, seed: int = 0
) -> dict[str, dict[str, tuple[float, float, float, int]]]:
    """Accuracy without ties of each model on pairs whose failure modes were all seen in training, and on pairs
    involving a held-out mode: `{model: {"seen": (acc, lo, hi, n), "heldout": (acc, lo, hi, n)}}`.

    acc is the mean of the rows' `correct` (1, 0, 0.5) over the n non-tie pairs (pairs with no failure mode count as
    seen); [lo, hi] is a 95% bootstrap interval (`stats.bootstrap_ci`), resampling source images when every row
    names its `source` (as `evaluate_pairs` does), else pairs. A part with no pair is (nan, nan, nan, 0).
    """
    held = set(holdout_modes)
    parts: dict[str, dict[str, tuple[list[float], list[Any]]]] = {}
    for row in pair_rows:
        model_parts = parts.setdefault(str(row["model"]), {"seen": ([], []), "heldout": ([], [])})
        credit = _float(row.get("correct"))
        if credit is None:  # a human tie
            continue
        credits, sources = model_parts["heldout" if _failure_modes(row) & held else "seen"]
        credits.append(credit)
        sources.append(row.get("source"))
    nan = float("nan")
    out: dict[str, dict[str, tuple[float, float, float, int]]] = {}
    for model, model_parts in parts.items():
        out[model] = {}
        for part, (credits, sources) in model_parts.items():
            if not credits:
                out[model][part] = (nan, nan, nan, 0)
                continue
            groups = sources if all(s not in (None, "") for s in sources) else None
            lo, hi = bootstrap_ci(np.mean, np.array(credits), n_resamples=n_resamples, seed=seed, groups=groups)
            out[model][part] = (float(np.mean(credits)), lo, hi, len(credits))
    return out


# ---------------------------------------------------------------------------------------------------------- plots


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save_png(fig: Figure, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    with atomic_write(path, "wb") as f:
        f.write(buffer.getvalue())


def _colors(models: Sequence[str], groups: Mapping[str, str]) -> dict[str, str]:
    """A bar colour per model: fixed for handcrafted / learned, the palette's others for other groups."""
    others = iter(c for c in MODEL_COLORS if c not in GROUP_COLORS.values())
    by_group = dict(GROUP_COLORS)
    for group in dict.fromkeys(groups.get(m, "") for m in models):
        by_group.setdefault(group, next(others, "#555555"))
    return {m: by_group[groups.get(m, "")] for m in models}


def _percent_err(result: Mapping[str, Any], key: str) -> list[list[float]] | None:
    """matplotlib error-bar lengths [[below], [above]] in percent from `key_ci`, or None without a finite interval."""
    ci = result.get(f"{key}_ci")
    if ci is None or not all(_finite(v) for v in ci):
        return None
    value = result[key]
    return [[100 * max(value - ci[0], 0.0)], [100 * max(ci[1] - value, 0.0)]]


def _plot_accuracy(
    results: Mapping[str, Mapping[str, Any]], groups: Mapping[str, str], seed_results: Mapping[str, Sequence[Mapping]]
) -> Figure | None:
    """Horizontal bars of accuracy (and accuracy with ties) per model, best at the top, with intervals and seeds."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    titles = {"pair_accuracy": "Pair accuracy, no ties", "pair_accuracy_ties": "Accuracy with ties (val ε)"}
    keys = [k for k in titles if any(_finite(r.get(k)) for r in results.values())]
    if not keys:
        return None
    order = sorted(results, key=lambda m: _float(results[m].get("pair_accuracy"), -1.0))
    colors = _colors(order, groups)
    fig = _new_figure(1.5 + 4.6 * len(keys), 1.8 + 0.36 * len(order))
    axes = fig.subplots(1, len(keys), sharey=True, squeeze=False)[0]
    for ax, key in zip(axes, keys, strict=True):
        for i, model in enumerate(order):
            value = results[model].get(key)
            if not _finite(value):
                continue
            xerr = _percent_err(results[model], key)
            ax.barh(i, 100 * value, color=colors[model], xerr=xerr, capsize=3, error_kw={"lw": 1})
            ax.text(1.5, i, f"{100 * value:.1f}", va="center", color="white", fontsize=8, fontweight="bold")
            seeds = [100 * s[key] for s in seed_results.get(model, ()) if _finite(s.get(key))]
            ax.plot(seeds, i + np.linspace(-0.22, 0.22, len(seeds)), "o", mfc="none", mec="black", ms=4)
        if key == "pair_accuracy":
            ax.axvline(50, color="black", ls="--", lw=1)
        ax.set(xlim=(0, 100), xlabel="accuracy (%)", title=titles[key])
        ax.grid(axis="x", alpha=0.3)
    axes[0].set(yticks=range(len(order)), yticklabels=order, ylim=(-0.6, len(order) - 0.4))
    group_colors = {groups.get(m, ""): colors[m] for m in order}
    handles = [Patch(color=c, label=g) for g, c in group_colors.items() if g]
    handles.append(Line2D([], [], color="black", ls="--", lw=1, label="chance (50%)"))
    if any(seed_results.get(m) for m in order):
        handles.append(Line2D([], [], ls="", marker="o", mfc="none", mec="black", ms=4, label="one seed / fold"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False, fontsize=8)
    return fig


def _panel_grid(n: int, width: float, height: float, **subplot_kw: Any) -> tuple[Figure, list]:
    """A figure with n panels on a grid of up to 4 columns; the grid's spare axes are hidden."""
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig = _new_figure(width * ncols + 0.4, height * nrows + 0.5)
    axes = list(fig.subplots(nrows, ncols, squeeze=False, **subplot_kw).flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _rows_by_model(pair_rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    by_model: dict[str, list[Mapping[str, Any]]] = {}
    for row in pair_rows:
        by_model.setdefault(str(row["model"]), []).append(row)
    return by_model


def _plot_reward_vs_label(
    pair_rows: Sequence[Mapping[str, Any]], results: Mapping[str, Mapping[str, Any]], groups: Mapping[str, str]
) -> tuple[Figure, bool] | None:
    """Small multiples, learned models first: reward against label score per video when rows carry `score_a`/
    `score_b`, else the model's delta scaled by its standard deviation per human label. Returns (figure, by score).
    """
    by_model = _rows_by_model(pair_rows)
    models = [m for m in results if m in by_model] + [m for m in by_model if m not in results]
    models = sorted(models, key=lambda m: groups.get(m) != "learned")[:MAX_PANELS]
    if not models:
        return None
    rng = np.random.default_rng(0)
    by_score = any(_float(r.get("score_a")) is not None for r in pair_rows)
    fig, axes = _panel_grid(len(models), 3.1, 2.7, sharey=not by_score)
    for ax, model in zip(axes, models, strict=True):
        spearman = _float(results.get(model, {}).get("spearman"))
        ax.set_title(model + (f"  (ρ = {spearman:.2f})" if spearman is not None else ""), fontsize=9)
        if by_score:  # one dot per distinct (source, score, reward): a video shared by pairs is drawn once
            videos = {
                (r.get("source"), _float(r.get(f"score_{s}")), _float(r.get(f"reward_{s}")))
                for r in by_model[model]
                for s in "ab"
            }
            points = np.array([(x, y) for _, x, y in videos if x is not None and y is not None]).reshape(-1, 2)
            ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.4, color="#1f77b4", lw=0)
            ax.set(xlabel="label score", ylabel="predicted reward")
            continue
        pairs = [(delta, r.get("label")) for r in by_model[model] if (delta := _float(r.get("delta"))) is not None]
        scale = float(np.std([delta for delta, _ in pairs] or [0.0])) or 1.0  # not centred: 0 stays the boundary
        per_label = [np.array([d for d, lab in pairs if lab == label]) / scale for label in ("B", "tie", "A")]
        ax.boxplot(per_label, positions=range(3), widths=0.55, showfliers=False, medianprops={"color": "black"})
        for x, values in enumerate(per_label):
            shown = rng.permutation(values)[:MAX_POINTS]
            ax.scatter(x + rng.uniform(-0.2, 0.2, shown.size), shown, s=4, alpha=0.3, color="#1f77b4", lw=0)
        ax.axhline(0, color="grey", lw=0.8, ls="--")
        ax.set_xticks(range(3), ["B better", "tie", "A better"])
        ax.set(xlabel="human label", ylabel="(r_A − r_B) / sd" if ax.get_subplotspec().is_first_col() else "")
    return fig, by_score


def _ordered_modes(results: Mapping[str, Mapping[str, Any]], holdout: set[str]) -> list[str]:
    """Every mode in any `per_mode`: seen modes first, then held-out ones, each sorted."""
    modes = {mode for r in results.values() for mode in r.get("per_mode", {})}
    return sorted(modes, key=lambda m: (m in holdout, m))


def _mode_label(mode: str, holdout: set[str]) -> str:
    return f"{mode} {HOLDOUT_MARK}" if mode in holdout else mode


def _plot_per_mode(results: Mapping[str, Mapping[str, Any]], holdout: set[str]) -> Figure | None:
    """Heatmap of accuracy (%) per failure mode (rows) and model (columns); held-out modes below a line."""
    import matplotlib

    models = [m for m in results if results[m].get("per_mode")]
    modes = _ordered_modes(results, holdout)
    if not models:
        return None
    acc = np.array([[_float(results[m]["per_mode"].get(mode), np.nan) for m in models] for mode in modes]) * 100
    fig = _new_figure(3.2 + 0.95 * len(models), 1.9 + 0.34 * len(modes))
    ax = fig.subplots()
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(acc), cmap=cmap, vmin=0, vmax=100, aspect="auto")
    for (i, j), value in np.ndenumerate(acc):
        text = MISSING if np.isnan(value) else f"{value:.0f}"
        color = "white" if abs(np.nan_to_num(value, nan=50) - 50) > 35 else "black"
        ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
    n_seen = sum(mode not in holdout for mode in modes)
    if 0 < n_seen < len(modes):
        ax.axhline(n_seen - 0.5, color="black", lw=2)
    ax.set_yticks(range(len(modes)), [_mode_label(m, holdout) for m in modes])
    ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
    ax.set_title("Pair accuracy per failure mode" + (f" ({HOLDOUT_MARK} held out of training)" if holdout else ""))
    fig.colorbar(image, ax=ax, label="accuracy (%)", shrink=0.8)
    return fig


def _plot_per_severity(pair_rows: Sequence[Mapping[str, Any]], models: Sequence[str]) -> Figure | None:
    """Accuracy (%) per bin of the pair's worst failure severity, one line per model (non-tie pairs, severity > 0)."""
    points = []  # (model, pair id, severity, credit)
    for row in pair_rows:
        severities = [s for s in (_float(row.get("severity_a")), _float(row.get("severity_b"))) if s is not None]
        credit = _float(row.get("correct"))
        if severities and max(severities) > 0 and credit is not None:
            points.append((str(row["model"]), row.get("id"), max(severities), credit))
    if not points:
        return None
    severity = np.array([p[2] for p in points])
    n_bins = SEVERITY_BINS if severity.max() > severity.min() else 1
    edges = np.linspace(severity.min(), severity.max(), n_bins + 1)
    bins = np.clip(np.searchsorted(edges, severity, side="right") - 1, 0, n_bins - 1)
    fig = _new_figure(7.5, 3.6)
    ax = fig.subplots()
    drawn = [m for m in models if any(p[0] == m for p in points)]
    for k, model in enumerate(drawn):
        mine = np.array([p[0] == model for p in points])
        credit = np.array([p[3] for p in points])
        acc = [100 * credit[mine & (bins == b)].mean() if (mine & (bins == b)).any() else np.nan for b in range(n_bins)]
        ax.plot(range(n_bins), acc, marker="o", color=MODEL_COLORS[k % len(MODEL_COLORS)], label=model)
    n_pairs = [len({p[1] for p, b in zip(points, bins, strict=True) if b == i}) for i in range(n_bins)]
    ticks = [f"{edges[i]:.2f}–{edges[i + 1]:.2f}\n(n={n})" for i, n in enumerate(n_pairs)]
    ax.set_xticks(range(n_bins), ticks, fontsize=8)
    ax.axhline(50, color="black", ls="--", lw=1)
    ax.set(ylim=(0, 100), xlabel="worst failure severity in the pair", ylabel="accuracy (%)")
    ax.set_title("Pair accuracy per failure severity")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    return fig


def _plot_seen_vs_heldout(split: Mapping[str, Mapping[str, tuple[float, float, float, int]]]) -> Figure | None:
    """Grouped bars per model: accuracy (%) on seen-mode pairs and on held-out-mode pairs, with 95% intervals."""
    models = [m for m in split if any(split[m][part][3] for part in PART_COLORS)]
    if not models:
        return None
    fig = _new_figure(2.5 + 1.1 * len(models), 3.8)
    ax = fig.subplots()
    width = 0.38
    for j, (part, label) in enumerate((("seen", "seen modes"), ("heldout", f"held-out modes {HOLDOUT_MARK}"))):
        x = np.arange(len(models)) + (j - 0.5) * width
        acc, lo, hi = 100 * np.array([split[m][part][:3] for m in models], dtype=float).T  # 3 x (n_models,)
        yerr = np.clip([acc - lo, hi - acc], 0, None)
        ax.bar(x, acc, width, yerr=np.nan_to_num(yerr), capsize=3, color=PART_COLORS[part], label=label)
        for xi, top, value in zip(x, np.fmax(hi, acc), acc, strict=True):
            if np.isfinite(value):
                ax.text(xi, top + 1.5, f"{value:.0f}", ha="center", fontsize=7)
    ax.axhline(50, color="black", ls="--", lw=1)
    ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
    ax.set(ylim=(0, 108), ylabel="accuracy (%)", title="Seen vs held-out failure modes")
    fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    return fig


def _plot_attention(entry: Mapping[str, Any]) -> Figure:
    """The image, then up to MAX_FRAMES evenly spaced frames under the heatmap (one colour scale for all frames;
    opacity grows with attention), each titled with its share of the attention mass.
    """
    frames = np.asarray(entry["frames"])  # (T, H, W, 3) uint8
    heat = np.asarray(entry["heatmaps"], dtype=np.float64)  # (T, h, w)
    if len(frames) == 0 or len(frames) != len(heat):
        raise ValueError(f"attention {entry['id']!r}: need one heatmap per frame, got {len(heat)} for {len(frames)}")
    shown = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), MAX_FRAMES)).round().astype(int))
    vmax = heat.max() if heat.max() > 0 else 1.0
    share = heat.sum(axis=(1, 2)) / (heat.sum() or 1.0)  # (T,)
    panel = 1.75  # inches per picture
    fig = _new_figure(1.0 + panel * (len(shown) + 1), 0.7 + panel * frames.shape[1] / frames.shape[2])
    axes = fig.subplots(1, len(shown) + 1)
    axes[0].imshow(np.asarray(entry["image"]))
    axes[0].set_title("image", fontsize=8)
    for ax, t in zip(axes[1:], shown, strict=True):
        h, w = frames[t].shape[:2]
        ax.imshow(frames[t])
        overlay = ax.imshow(
            heat[t],
            cmap="inferno",
            vmin=0,
            vmax=vmax,
            alpha=0.15 + 0.7 * heat[t] / vmax,
            extent=(-0.5, w - 0.5, h - 0.5, -0.5),
            interpolation="bilinear",
        )
        ax.set_title(f"t={t} · {share[t]:.0%}", fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    fig.colorbar(overlay, ax=axes, shrink=0.8, pad=0.01, label="attention mass")
    fig.suptitle(f"{entry['id']} — {entry.get('title', '')}".rstrip(" —"), fontsize=9)
    return fig


# ----------------------------------------------------------------------------------------------------------- page

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222;
  overflow-wrap: break-word; }
h1 { overflow-wrap: anywhere; }
.table-wrap { max-width: 100%; overflow-x: auto; margin: 0.5em 0 1em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.4em; text-align: right; vertical-align: top; }
td { white-space: nowrap; }
th { background: #f3f3f3; vertical-align: bottom; min-width: 4em; }
th:first-child, td:first-child { text-align: left; }
.sub { display: block; font-size: 0.8em; color: #555; }
dl.settings { margin: 0.5em 0 1.5em; font-size: 0.9em; border-top: 1px solid #ddd; }
dl.settings > div { display: grid; grid-template-columns: minmax(7em, 12em) minmax(0, 1fr); gap: 0 1em;
  padding: 0.3em 0.6em; border-bottom: 1px solid #ddd; }
dl.settings > div > dt { font-weight: 600; }
dl.settings dd { margin: 0; min-width: 0; }
.value { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.95em;
  overflow-wrap: anywhere; white-space: pre-wrap; }
dl.fields { display: grid; grid-template-columns: repeat(auto-fill, minmax(17em, 1fr)); gap: 0.15em 1.5em; margin: 0; }
dl.fields > div { display: flex; gap: 0.5em; min-width: 0; }
dl.fields > div.group { grid-column: 1 / -1; display: block; }
dl.fields > div.group > dd { margin-left: 1.5em; }
dl.fields dt { color: #555; white-space: nowrap; }
dl.fields dt::after { content: ":"; }
details > summary { cursor: pointer; color: #555; }
figure { margin: 1.5em 0; }
img { max-width: 100%; height: auto; }
figcaption, .note { color: #555; font-size: 0.9em; max-width: 60em; }
"""
RESULTS_NOTE = (
    "Bold: best per column. Percentages are pair accuracies with [95% bootstrap interval]. "
    "Acc w/ ties uses the tie threshold ε chosen on validation data; test-swept chooses ε on the test set itself, "
    "which is optimistic (reported for comparison with papers that do so)."
)
HOLDOUT_NOTE = f"; {HOLDOUT_MARK}: failure mode held out of training"
CAPTIONS = {
    "accuracy": "Pairwise accuracy of each method, best at the top: whiskers are 95% bootstrap intervals, the dashed "
    "line is chance, colours are method groups and hollow dots are single seeds or folds.",
    "score": "Each dot is one video: the model's reward (y) against its label consistency score (x); a good reward "
    "rises steadily from left to right (ρ: Spearman correlation).",
    "delta": "Each panel is one model: its reward difference r_A − r_B, divided by its standard deviation, for pairs "
    "humans judged B better, tied or A better; a good reward puts B-better pairs below the dashed 0 line, ties near "
    "it and A-better pairs above it.",
    "per_mode": "Accuracy without ties (%) on the pairs involving each failure mode (rows) for each model (columns); "
    "grey cells have no non-tie pair.",
    "per_severity": "Accuracy without ties against the severity of the worst failure in the pair (bins of equal "
    "width, pairs per bin under the axis); a good reward gets more accurate as failures get more severe.",
    "seen_vs_heldout": "Accuracy without ties on pairs whose failure modes were all seen in training against pairs "
    "involving a held-out mode, with 95% bootstrap intervals; a small gap means the reward generalises to unseen "
    "failures.",
    "attention": "The conditioning image, then frames of the video under the reward head's attention (brighter and "
    "more opaque = more attention, one scale for all frames); the percentage over a frame is its share of the "
    "attention, so the frames where the video departs from the image stand out.",
}


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An HTML table in a container that scrolls sideways if it must (the page never does); `header` is escaped
    here (a header may break after ":", as in "metric:<wbr>color-hist"), `rows` hold cell HTML already escaped."""
    head = "".join(f"<th>{html.escape(h).replace(':', ':<wbr>')}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>\n" for row in rows)
    return f'<div class="table-wrap"><table>\n<tr>{head}</tr>\n{body}</table></div>'


def _cell_html(text: str) -> str:
    """Escaped cell text; a trailing interval "value [lo, hi]" or count "value (n=k)" on its own smaller line."""
    for sep in (" [", " (n="):
        value, found, rest = text.partition(sep)
        if found and rest.endswith(("]", ")")):
            return f'{html.escape(value)} <span class="sub">{html.escape(found.strip() + rest)}</span>'
    return html.escape(text)


def _best_bold(cells: Sequence[tuple[str, float | None]]) -> list[str]:
    """Escaped cell texts, bold on every cell holding the highest displayed value where at least two compete."""
    shown = [v for _, v in cells if v is not None]
    best = max(shown) if len(shown) >= 2 else None
    return [f"<b>{_cell_html(t)}</b>" if v is not None and v == best else _cell_html(t) for t, v in cells]


def _results_table(results: Mapping[str, Mapping[str, Any]], groups: Mapping[str, str]) -> str:
    header, columns = ["model"], [[html.escape(m) for m in results]]
    if any(groups.get(m) for m in results):  # no empty column where no model has a group (`icreward eval`)
        header.append("group")
        columns.append([html.escape(groups.get(m, "")) for m in results])
    for key in TABLE_COLUMNS:
        name, kind = COLUMN_FORMATS[key]
        header.append(name + (" (optimistic)" if key == "pair_accuracy_ties_test_swept" else ""))
        columns.append(_best_bold([_cell(r, key, kind) for r in results.values()]))
    if any(_finite(r.get("seed_mean")) for r in results.values()):
        header.append("pair acc % over seeds (mean ± sd)")
        cells = []
        for r in results.values():
            mean, std = _float(r.get("seed_mean")), _float(r.get("seed_std"))
            text = MISSING if mean is None else f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")
            cells.append((text, None if mean is None else round(100 * mean, 1)))
        columns.append(_best_bold(cells))
    header.append("n pairs")
    columns.append([html.escape(_cell(r, "n_pairs", "count")[0]) for r in results.values()])
    return _table(header, list(zip(*columns, strict=True)))


def _per_mode_table(results: Mapping[str, Mapping[str, Any]], holdout: set[str]) -> str:
    """The per-mode section (heading, table, note); empty when no result has `per_mode`."""
    rows = []
    for mode in _ordered_modes(results, holdout):
        cells: list[tuple[str, float | None]] = []
        for r in results.values():
            value, n = _float(r.get("per_mode", {}).get(mode)), r.get("per_mode_n", {}).get(mode)
            if value is None:
                cells.append((MISSING, None))
            else:
                cells.append((f"{100 * value:.1f}" + (f" (n={n})" if n is not None else ""), round(100 * value, 1)))
        rows.append([html.escape(_mode_label(mode, holdout)), *_best_bold(cells)])
    if not rows:
        return ""
    note = f'<p class="note">Bold: best per mode; n: non-tie pairs{HOLDOUT_NOTE * bool(holdout)}.</p>'
    return f"<h2>Accuracy per failure mode (%, no ties)</h2>\n{_table(['mode', *results], rows)}\n{note}"


def _meta_value(value: Any) -> str:
    """A scalar setting as text; a list of scalars comma-separated, other lists as JSON; None and [] as MISSING."""
    if value is None or (isinstance(value, list | tuple) and not value):
        return MISSING
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        if all(v is None or isinstance(v, str | int | float | bool) for v in value):
            return ", ".join(_meta_value(v) for v in value)
        return json.dumps(value, default=str, ensure_ascii=False)
    if isinstance(value, Mapping):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def _setting(key: Any, value: Any) -> str:
    """One setting: <dt>key</dt><dd>value</dd> in a <div>; a non-empty mapping becomes a nested list of its fields
    (folded into an open <details> when it has more than FOLD_FIELDS), its values wrapped in monospace."""
    if isinstance(value, Mapping) and value:
        fields = f'<dl class="fields">{"".join(_setting(k, v) for k, v in value.items())}</dl>'
        if len(value) > FOLD_FIELDS:
            fields = f"<details open><summary>{len(value)} fields</summary>{fields}</details>"
        return f'<div class="group"><dt>{html.escape(str(key))}</dt><dd>{fields}</dd></div>'
    return f'<div><dt>{html.escape(str(key))}</dt><dd class="value">{html.escape(_meta_value(value))}</dd></div>'


def _settings(meta: Mapping[str, Any]) -> str:
    """The settings as a definition list: one row per key, nested mappings as indented key: value fields."""
    if not meta:
        return ""
    rows = "\n".join(_setting(k, v) for k, v in meta.items())
    return f'<dl class="settings">\n{rows}\n</dl>'


def _figure(name: str, alt: str, caption: str) -> str:
    return (
        f'<figure><img src="{html.escape(name)}" alt="{html.escape(alt)}">\n'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _save_figures(report_dir: Path, plots: Sequence[tuple[str, Figure | None, str, str]]) -> list[str]:
    """Save each drawn figure of (file, figure, alt text, caption) as a PNG; the page's <figure> blocks."""
    blocks = []
    for name, fig, alt, caption in plots:
        if fig is not None:
            _save_png(fig, report_dir / name)
            blocks.append(_figure(name, alt, caption))
    return blocks


def write_html_report(
    report_dir: str | Path,
    results: dict[str, dict],
    pair_rows: list[dict],
    *,
    title: str,
    meta: dict | None = None,
    holdout_modes: Sequence[str] = (),
    model_groups: dict[str, str] | None = None,
    seed_results: dict[str, list[dict]] | None = None,
    attention: list[dict] | None = None,
) -> Path:
    """Write `report_dir/index.html` and the PNG plots it links (relative links; each file written atomically).

    The page: `title`, `meta` as a list of settings (nested mappings as indented fields, wrapped monospace values),
    the results table (best values bold, intervals on a line of their own), the plots scaled to the page width with
    a caption on how to read each, the per-mode table, and the attention strips; it reads at laptop widths (1024 px
    and up) without scrolling sideways (`tests/test_html_browser.py` checks it in Chromium). `holdout_modes`:
    failure modes kept out of training (marked †; adds the seen-vs-held-out plot). `model_groups`: {model:
    "handcrafted" | "learned" | ...} colours the bars and puts learned models first in the small multiples.
    `seed_results`: {model: [results dict per seed or fold]} drawn as dots over the accuracy bars. `attention`:
    [{"id", "title", "image" (H, W, 3) uint8, "frames" (T, H, W, 3) uint8, "heatmaps" (T, h, w)}], e.g. from
    `models.attention_heatmaps`. Returns the index path.
    """
    report_dir = Path(report_dir)
    groups = dict(model_groups or {})
    holdout = set(holdout_modes)
    models = list(dict.fromkeys([*results, *(str(r["model"]) for r in pair_rows)]))
    reward_plot, by_score = _plot_reward_vs_label(pair_rows, results, groups) or (None, False)
    mode_caption = CAPTIONS["per_mode"] + (
        f" {HOLDOUT_MARK}: held out of training (below the line)." if holdout else ""
    )
    plots = [  # (file, figure or None, alt text, caption)
        (
            "accuracy.png",
            _plot_accuracy(results, groups, seed_results or {}),
            "accuracy per method",
            CAPTIONS["accuracy"],
        ),
        ("reward_vs_label.png", reward_plot, "reward against label", CAPTIONS["score" if by_score else "delta"]),
        ("per_mode.png", _plot_per_mode(results, holdout), "accuracy per failure mode", mode_caption),
        ("per_severity.png", _plot_per_severity(pair_rows, models), "accuracy per severity", CAPTIONS["per_severity"]),
    ]
    if holdout:
        figure = _plot_seen_vs_heldout(seen_vs_heldout(pair_rows, holdout_modes))
        plots.append(("seen_vs_heldout.png", figure, "seen vs held-out modes", CAPTIONS["seen_vs_heldout"]))
    attention_plots = [
        (f"attention_{i:02d}.png", _plot_attention(entry), f"attention maps of {entry['id']}", CAPTIONS["attention"])
        for i, entry in enumerate(attention or [])
    ]
    plot_blocks, attention_blocks = (_save_figures(report_dir, p) for p in (plots, attention_plots))
    esc = html.escape
    page = [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">',
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>{esc(title)}</h1>",
        _settings(meta or {}),
        "<h2>Results</h2>",
        _results_table(results, groups),
        f'<p class="note">{esc(RESULTS_NOTE)}</p>',
        "<h2>Plots</h2>",
        *plot_blocks,
        _per_mode_table(results, holdout),
        "<h2>Where the videos depart from the image</h2>" if attention_blocks else "",
        *attention_blocks,
        "</body>\n</html>\n",
    ]
    index = report_dir / "index.html"
    with atomic_write(index) as f:
        f.write("\n".join(part for part in page if part))
    return index
