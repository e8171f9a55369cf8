"""`icreward serve`: an HTTP API (FastAPI, run by uvicorn) over any scorer `icreward.load` gives.

```python
from icreward.server import ServeSettings, create_app
app = create_app(icreward.load("metric:color-hist"), "metric:color-hist", ServeSettings(allow_roots=["/data"]))
```

Serving imports only the library (scorer, media, scoring), never the training code.
"""

from __future__ import annotations

import sys

from icreward.server.app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app", "run_cli"]


def run_cli(args) -> int:
    """`icreward serve`: load the model once and serve it until interrupted."""
    import uvicorn

    from icreward import load

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
