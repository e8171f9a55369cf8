"""`icreward serve`: the HTTP API over one loaded model, until interrupted."""

from __future__ import annotations

import argparse
import importlib.util
import sys

from icreward.cli.common import add_model_option
from icreward.errors import IcrewardError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help="HTTP API: POST /score and /rank (uploads or allowed paths), docs at /docs")
    add_model_option(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--allow-root",
        action="append",
        metavar="DIR",
        help="folder whose files JSON requests may name by path; repeat for several (default: uploads only)",
    )
    p.add_argument("--max-upload-mb", type=float, default=200.0, help="largest request body in MiB (default: 200)")
    p.add_argument("--max-frames", type=int, default=64, help="largest num_frames a request may ask for (default: 64)")
    p.add_argument("--request-timeout", type=float, default=60.0, help="seconds before a 504 answer (default: 60)")
    p.add_argument("--batch-size", type=int, default=8, help="most videos scored in one forward pass (default: 8)")
    p.add_argument(
        "--batch-wait-ms", type=float, default=10.0, help="how long a request waits for others to join (default: 10)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return p


def run(args: argparse.Namespace) -> int:
    """Load the model once and serve it until interrupted."""
    needed = {"fastapi": "fastapi", "uvicorn": "uvicorn", "python-multipart": "python_multipart"}
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
        request_timeout=args.request_timeout,
        batch_size=args.batch_size,
        batch_wait_ms=args.batch_wait_ms,
        device=args.device,
    )
    app = create_app(load(args.model), args.model, settings)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"icreward serve: {args.model} on http://{host}:{args.port} (API docs at /docs)", file=sys.stderr)
    if not settings.allow_roots:
        print("icreward serve: uploads only; --allow-root DIR also lets requests name files under DIR", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
