"""The reference: the same model behind a bare Starlette app (one process, model in-process).

Run by bench/realtime.py as: python bench/bare_app.py MODEL_JOBLIB PORT
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import joblib
import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def create() -> Starlette:
    """The app for ``uvicorn --factory bench.bare_app:create --workers N`` (bench/workers.py); the model
    from MODELHOST_BENCH_MODEL."""
    return _app(joblib.load(os.environ["MODELHOST_BENCH_MODEL"]))


def main() -> None:
    app = _app(joblib.load(sys.argv[1]))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[2]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


def _app(model: Any) -> Starlette:
    async def invocations(request: Request) -> Response:
        body = await request.body()
        rows = np.array([[float(v) for v in line.split(",")] for line in body.decode().splitlines() if line])
        return Response(json.dumps(model.predict(rows).tolist()), media_type="application/json")

    return Starlette(routes=[Route("/invocations", invocations, methods=["POST"])])


if __name__ == "__main__":
    main()
