"""`icreward eval`: agreement of one or more models with the labels of a pair manifest."""

from __future__ import annotations

import argparse
import sys
import time

from icreward.cli.common import (
    MAX_BOOTSTRAP,
    add_precision_option,
    add_quiet_option,
    int_range,
    positive_int,
    seed_value,
)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("eval", help="agreement of one or more models with the labels of a pair manifest")
    p.add_argument(
        "--data",
        required=True,
        help="test manifest (pair records), a folder written by `icreward synth` (its test.jsonl, and val.jsonl for "
        "the tie thresholds), or icbench-synth (the embedded benchmark)",
    )
    p.add_argument(
        "--model",
        action="append",
        help="model name; repeat for several (default: the shipped model). 'metrics:offline' expands to every metric "
        "that needs no weights",
    )
    p.add_argument("--val", help="validation manifest: the tie threshold of each model is chosen on it")
    p.add_argument(
        "--report",
        help="folder (created if missing) for results.json, pairs.csv and index.html; those are replaced, other "
        "files in it are kept",
    )
    p.add_argument("--skip-bad", action="store_true", help="skip invalid manifest lines and list them")
    p.add_argument(
        "--bootstrap",
        type=int_range(1, MAX_BOOTSTRAP),
        default=1000,
        help=f"bootstrap resamples for the 95%% intervals, 1..{MAX_BOOTSTRAP} (default: 1000)",
    )
    p.add_argument("--seed", type=seed_value, default=0, help="seed of the bootstrap resamples, >= 0 (default: 0)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="videos per forward pass, >= 1 (default: 8)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:<i> or mps (default: cpu)")
    add_precision_option(p)
    add_quiet_option(p)
    return p


def check_paths(args: argparse.Namespace) -> None:
    """Inputs readable and the report folder usable, before anything is loaded or scored."""
    from icreward.atomic import check_output_dir
    from icreward.cli.common import check_device, check_inputs, check_precision
    from icreward.evaluation.evaluate import DEFAULT_BENCHMARK

    data = None if args.data == DEFAULT_BENCHMARK else args.data
    check_inputs(data=data, val=args.val)
    if args.report:  # results.json, pairs.csv, index.html go into it beside whatever else it holds
        check_output_dir(args.report, flag="--report", inputs={"--data": data, "--val": args.val}, overwrite=True)
    check_device(args.device)
    check_precision(args.device, args.precision)


def run(args: argparse.Namespace) -> int:
    from icreward.errors import IcrewardError
    from icreward.evaluation.evaluate import evaluate_model, expand_models, resolve_data
    from icreward.evaluation.html import write_html_report
    from icreward.evaluation.report import format_heads_table, format_per_mode_table, format_table, write_report
    from icreward.manifest import format_skipped, load_manifest
    from icreward.rules import DEFAULT_MODEL

    check_paths(args)
    data_path, val_path = resolve_data(args.data, args.val)
    test = load_manifest(data_path, skip_bad=args.skip_bad, require_labels=True)
    val = load_manifest(val_path, skip_bad=args.skip_bad, require_labels=True) if val_path else None
    for m in (test, val):
        if m is not None and m.kind != "pair":
            raise IcrewardError(f"{m.path}: eval needs pair records (image, video_a, video_b, label)")
        if m is not None and m.skipped:
            print(format_skipped(m), file=sys.stderr)
    names = expand_models(args.model or [DEFAULT_MODEL])
    results, rows = {}, []
    for name in names:
        start = time.perf_counter()
        results[name], model_rows = evaluate_model(
            name,
            test,
            val,
            n_resamples=args.bootstrap,
            seed=args.seed,
            batch_size=args.batch_size,
            device=args.device,
            precision=args.precision,
        )
        results[name]["seconds"] = round(time.perf_counter() - start, 2)
        rows += model_rows
    print(f"\n{len(test)} test pairs from {test.path}" + (f", tie threshold chosen on {val.path}" if val else ""))
    print(format_table(results))
    print("\nPairwise accuracy (%) per failure mode (pairs without human ties):")
    print(format_per_mode_table(results))
    heads = format_heads_table(results)
    if heads:
        print("\nEvery head against its own labels, and the static test (a frozen copy of the image vs the videos):")
        print(heads)
    if args.report:
        meta = {"data": str(test.path), "val": str(val.path) if val else None, "bootstrap": args.bootstrap}
        write_report(args.report, results, rows, meta=meta)
        write_html_report(args.report, results, rows, title=f"icreward eval: {test.path}", meta=meta)
        print(f"\nreport written to {args.report}")
    return 0
