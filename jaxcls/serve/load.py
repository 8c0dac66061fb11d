"""A bounded load test of a jaxcls server on this machine: N concurrent clients posting images
for T seconds; throughput, latency percentiles, failures, the server's memory and compilations
before and after. Prints one JSON line.

    python -m jaxcls.serve.load --exported=DIR|--workdir=W [--clients=8 --seconds=20]
        [--images_per_request=1] [--image=FILE ...] [--max_batch=32 --max_wait_ms=5]
    python -m jaxcls.serve.load --url=http://127.0.0.1:8000 ...   (a server already running)

With --exported/--workdir it starts `python -m jaxcls.serve` on a free local port and stops it
afterwards. Without --image it posts synthetic 64x64 JPEGs.
"""

import asyncio
import io
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.parse

import httpx
import numpy as np
from absl import app, flags
from PIL import Image

from jaxcls import cli

MAX_CLIENTS, MAX_SECONDS = 64, 300


def synthetic_jpegs(count: int = 8, size: int = 64, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)).save(buf, "JPEG")
        out.append(buf.getvalue())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: list[str], port: int, timeout: float = 300.0) -> subprocess.Popen:
    """`python -m jaxcls.serve ARGS --port=PORT`, returned once GET /health answers."""
    proc = subprocess.Popen([sys.executable, "-m", "jaxcls.serve", *args, f"--port={port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n"
                               f"{proc.stdout.read()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError(f"the server did not answer GET /health within {timeout:g} s")


async def _client(http: httpx.AsyncClient, url: str, bodies: list, deadline: float,
                  latencies: list, failures: list, seed: int) -> None:
    rng = np.random.default_rng(seed)
    while time.monotonic() < deadline:
        body = bodies[rng.integers(len(bodies))]
        start = time.perf_counter()
        try:
            r = await http.post(url, files=body) if isinstance(body, list) else await http.post(
                url, content=body, headers={"Content-Type": "image/jpeg"})
            ok = r.status_code == 200 and len(r.json()["predictions"]) == (
                len(body) if isinstance(body, list) else 1)
            if not ok:
                failures.append(f"{r.status_code}: {r.text[:200]}")
        except httpx.HTTPError as e:
            failures.append(f"{type(e).__name__}: {e}")
            continue
        latencies.append(time.perf_counter() - start)


async def run_load(base: str, images: list[bytes], clients: int, seconds: float,
                   images_per_request: int = 1) -> dict:
    """Drives `clients` concurrent clients against BASE/predict for `seconds`."""
    if not 1 <= clients <= MAX_CLIENTS or not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"--clients must be in [1, {MAX_CLIENTS}] and --seconds in "
                         f"(0, {MAX_SECONDS}]: got {clients}, {seconds}")
    host = urllib.parse.urlparse(base).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"--url={base}: the load test only targets this machine")
    if images_per_request == 1:
        bodies = images
    else:
        bodies = [[(f"f{j}", (f"{i}_{j}.jpg", images[(i + j) % len(images)], "image/jpeg"))
                   for j in range(images_per_request)] for i in range(len(images))]
    latencies, failures = [], []
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=60.0, limits=limits) as http:
        before = (await http.get(f"{base}/health")).json()
        start = time.monotonic()
        await asyncio.gather(*(_client(http, f"{base}/predict", bodies, start + seconds,
                                       latencies, failures, seed) for seed in range(clients)))
        elapsed = time.monotonic() - start
        after = (await http.get(f"{base}/health")).json()
    ms = np.asarray(latencies) * 1000.0
    batches = after["batches"] - before["batches"]
    return {"clients": clients, "seconds": round(elapsed, 2),
            "images_per_request": images_per_request, "requests": len(latencies),
            "failed": len(failures), "first_failures": failures[:3],
            "requests_per_s": round(len(latencies) / elapsed, 1),
            "images_per_s": round(len(latencies) * images_per_request / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
            "batches": batches,
            "mean_batch": round((after["images"] - before["images"]) / max(batches, 1), 2),
            "compilations_before": before["compilations"],
            "compilations_after": after["compilations"],
            "rss_mib_before": round(before["rss_bytes"] / 2**20, 1),
            "rss_mib_after": round(after["rss_bytes"] / 2**20, 1)}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    if sum(map(bool, (f.url, f.exported, f.workdir))) != 1:
        raise app.UsageError("give one of --url, --exported, --workdir")
    images = []
    for path in f.image or []:
        with open(path, "rb") as fh:
            images.append(fh.read())
    images = images or synthetic_jpegs()
    proc = None
    base = f.url
    if not base:
        port = free_port()
        source = f"--exported={f.exported}" if f.exported else f"--workdir={f.workdir}"
        proc = start_server([source, f"--max_batch={f.max_batch}",
                             f"--max_wait_ms={f.max_wait_ms}"], port)
        base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(run_load(base, images[:8], f.clients, min(f.warmup_seconds, f.seconds)))
        result = asyncio.run(run_load(base, images, f.clients, f.seconds,
                                      f.images_per_request))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    result.update(max_batch=f.max_batch, max_wait_ms=f.max_wait_ms, cpus=os.cpu_count())
    print(json.dumps(result))
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    flags.DEFINE_string("url", None, "a running server, e.g. http://127.0.0.1:8000")
    flags.DEFINE_string("exported", None, "start a server on this export")
    flags.DEFINE_string("workdir", None, "start a server on this run")
    flags.DEFINE_integer("clients", 8, f"concurrent clients (at most {MAX_CLIENTS})")
    flags.DEFINE_float("seconds", 20.0, f"measured duration (at most {MAX_SECONDS})")
    flags.DEFINE_float("warmup_seconds", 3.0, "unmeasured load first (memory 'before' is after "
                       "it)")
    flags.DEFINE_integer("images_per_request", 1, ">1: multipart requests of that many images")
    flags.DEFINE_multi_string("image", None, "image files to post (default: synthetic JPEGs)")
    flags.DEFINE_integer("max_batch", 32, "the started server's --max_batch")
    flags.DEFINE_float("max_wait_ms", 5.0, "the started server's --max_wait_ms")
    cli.run(main)
