"""`icreward serve`: an HTTP API (FastAPI, run by uvicorn) over any scorer `icreward.load` gives.

```python
from icreward.server import ServeSettings, create_app, serve_in_thread
app = create_app(icreward.load("metric:color-hist"), "metric:color-hist", ServeSettings(allow_roots=["/data"]))
with serve_in_thread(app) as url:  # a notebook or a test: the service on a free loopback port, stopped after
    ...
```

Serving imports only the library (interface, media, scoring), never the training code.
"""

from __future__ import annotations

from icreward.server.app import ServeSettings, create_app
from icreward.server.background import serve_in_thread

__all__ = ["ServeSettings", "create_app", "serve_in_thread"]
