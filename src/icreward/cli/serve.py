"""`icreward serve`: the HTTP API over one loaded model, until interrupted."""

from __future__ import annotations

import argparse
import importlib.util
import sys

from icreward.cli.common import (
    MAX_FRAMES,
    MIN_FRAMES,
    add_head_option,
    add_model_option,
    add_precision_option,
    check_device,
    check_precision,
    float_range,
    int_range,
)
from icreward.errors import IcrewardError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "serve", help="HTTP API: POST /score, /rank and /explain (uploads or allowed paths), a page at /, docs at /docs"
    )
    add_model_option(p)
    add_head_option(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int_range(1, 65535), default=8000, help="TCP port, 1..65535 (default: 8000)")
    p.add_argument(
        "--allow-root",
        action="append",
        metavar="DIR",
        help="folder whose files JSON requests may name by path; repeat for several (default: uploads only)",
    )
    p.add_argument(
        "--max-upload-mb",
        type=float_range(0, lo_open=True),
        default=200.0,
        help="largest request body in MiB, > 0 (default: 200)",
    )
    p.add_argument(
        "--max-frames",
        type=int_range(MIN_FRAMES, MAX_FRAMES),
        default=64,
        help=f"largest num_frames a request may ask for, {MIN_FRAMES}..{MAX_FRAMES} (default: 64)",
    )
    p.add_argument(
        "--max-decode-mb",
        type=float_range(0, lo_open=True),
        default=512.0,
        help="most memory one request's decoded media may take, estimated from the file headers, MiB (default: 512)",
    )
    p.add_argument(
        "--max-rank-videos",
        type=int_range(1),
        default=64,
        help="most candidate videos in one /rank request, >= 1 (default: 64)",
    )
    p.add_argument(
        "--request-timeout",
        type=float_range(0, lo_open=True),
        default=60.0,
        help="seconds before a 504 answer, > 0 (default: 60)",
    )
    p.add_argument(
        "--batch-size", type=int_range(1), default=8, help="most videos scored in one forward pass, >= 1 (default: 8)"
    )
    p.add_argument(
        "--batch-wait-ms",
        type=float_range(0),
        default=10.0,
        help="how long a request waits for others to join, >= 0 (default: 10)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:<i> or mps (default: cpu)")
    add_precision_option(p)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return p


def run(args: argparse.Namespace) -> int:
    """Load the model once and serve it until interrupted."""
    check_device(args.device)
    check_precision(args.device, args.precision)
    needed = {
        "fastapi": "fastapi",
        "fastapi-offline": "fastapi_offline",
        "uvicorn": "uvicorn",
        "python-multipart": "python_multipart",
    }
    missing = [package for package, module in needed.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise IcrewardError(f"serving needs {', '.join(missing)}: pip install {' '.join(missing)}")
    import uvicorn

    from icreward.loading import load
    from icreward.server import ServeSettings, create_app

    settings = ServeSettings(
        allow_roots=args.allow_root or (),
        max_upload_mb=args.max_upload_mb,
        max_frames=args.max_frames,
        max_decode_mb=args.max_decode_mb,
        max_rank_videos=args.max_rank_videos,
        request_timeout=args.request_timeout,
        batch_size=args.batch_size,
        batch_wait_ms=args.batch_wait_ms,
        device=args.device,
        precision=args.precision,
    )
    app = create_app(load(args.model, head=args.head), args.model, settings)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"icreward serve: {args.model} on http://{host}:{args.port} (page at /, docs at /docs)", file=sys.stderr)
    if not settings.allow_roots:
        print("icreward serve: uploads only; --allow-root DIR also lets requests name files under DIR", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
