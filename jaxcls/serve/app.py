"""The FastAPI application: POST /predict, GET /health, GET /metadata, GET / (the page)."""

import asyncio
import contextlib
import dataclasses
import os

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from jaxcls.serve import batching, inputs, page
from jaxcls.serve.model import Served


@dataclasses.dataclass
class Settings:
    max_batch: int = 32  # images per call of the compiled function (the largest bucket)
    max_wait_ms: float = 5.0  # how long the first queued image waits for others to join
    max_request_bytes: int = 20 * 2**20  # request bodies above this: 413
    max_pixels: int = 40_000_000  # images whose header declares more pixels: 413, not decoded
    max_images: int = 64  # images per request above this: 413
    timeout_s: float = 30.0  # a request not answered by then: 504
    warm_up: bool = True  # compile every bucket before serving


def rss_bytes() -> int | None:
    """This process's resident memory (Linux /proc), or None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def create_app(served: Served, settings: Settings | None = None) -> FastAPI:
    """The application serving `served` under `settings` (default: Settings())."""
    settings = settings or Settings()
    batcher = batching.MicroBatcher(served.fn, settings.max_batch, settings.max_wait_ms)
    if settings.warm_up:
        served.warm_up(batcher.sizes)

    @contextlib.asynccontextmanager
    async def lifespan(_):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="jaxcls", lifespan=lifespan)

    @app.exception_handler(inputs.InputError)
    async def _rejected(_, e: inputs.InputError):
        return JSONResponse({"detail": e.message}, status_code=e.status)

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return page.HTML

    @app.get("/health")
    async def health():
        return {"status": "ok", "compilations": served.compilations(),
                "buckets": batcher.sizes, "batches": batcher.batches, "images": batcher.images,
                "rss_bytes": rss_bytes()}

    @app.get("/metadata")
    async def metadata():
        return served.metadata

    def decode_all(items):
        return np.stack([inputs.decode(i + 1, name, data, served.image_size, served.crop_frac,
                                       settings.max_pixels)
                         for i, (name, data) in enumerate(items)])

    async def answer(request: Request, top_k: int) -> dict:
        body = await inputs.read_body(request.headers, request.stream(),
                                      settings.max_request_bytes)
        items = await inputs.split_images(request.headers, body, settings.max_images)
        probs = await batcher.predict(await run_in_threadpool(decode_all, items))
        k = max(1, min(top_k, len(served.class_names)))
        predictions = []
        for (name, _), p in zip(items, probs, strict=True):
            top = np.argsort(-p, kind="stable")[:k]
            predictions.append({"name": name, "top_k": [
                {"label": served.class_names[j], "probability": float(p[j])} for j in top]})
        return {"predictions": predictions}

    @app.post("/predict")
    async def predict(request: Request, top_k: int = 5):
        """Image bytes (image/*, application/octet-stream) or multipart files -> top-k."""
        try:
            return await asyncio.wait_for(answer(request, top_k), settings.timeout_s)
        except TimeoutError:
            raise inputs.InputError(504, f"no answer within {settings.timeout_s:g} s "
                                         "(--timeout_s)") from None

    return app
