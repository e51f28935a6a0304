"""The reference: the same model behind a bare Starlette app (one process, model in-process).

Run by bench/realtime.py as: python bench/bare_app.py MODEL_JOBLIB PORT
"""

from __future__ import annotations

import json
import sys

import joblib
import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def main() -> None:
    model = joblib.load(sys.argv[1])

    async def invocations(request: Request) -> Response:
        body = await request.body()
        rows = np.array([[float(v) for v in line.split(",")] for line in body.decode().splitlines() if line])
        return Response(json.dumps(model.predict(rows).tolist()), media_type="application/json")

    app = Starlette(routes=[Route("/invocations", invocations, methods=["POST"])])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[2]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
