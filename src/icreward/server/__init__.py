"""`icreward serve`: an HTTP API (FastAPI, run by uvicorn) over any scorer `icreward.load` gives.

```python
from icreward.server import ServeSettings, create_app
app = create_app(icreward.load("metric:color-hist"), "metric:color-hist", ServeSettings(allow_roots=["/data"]))
```

Serving imports only the library (interface, media, scoring), never the training code.
"""

from __future__ import annotations

from icreward.server.app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app"]
