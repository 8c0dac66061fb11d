"""jaxcls.serve against a running uvicorn over real HTTP: endpoints, exact 4xx for bad input
with the server still serving, several images per request in one batch, concurrent requests
micro-batched, and no compilation after start."""

import asyncio
import io
import json
import os
import re
import struct
import zlib

import httpx
import numpy as np
import pytest
from conftest import tiny_config
from PIL import Image

from jaxcls.data import sources
from jaxcls.export import artifact
from jaxcls.serve import batching, load, model

MAX_BATCH, MAX_BYTES, MAX_PIXELS, MAX_IMAGES = 8, 100_000, 1_000_000, 4


@pytest.fixture(scope="module")
def server(exported_run):
    """(base URL, export dir): `python -m jaxcls.serve --exported=DIR` on a free port."""
    out = exported_run[1]
    port = load.free_port()
    proc = load.start_server([f"--exported={out}", f"--max_batch={MAX_BATCH}",
                              "--max_wait_ms=50", f"--max_request_bytes={MAX_BYTES}",
                              f"--max_pixels={MAX_PIXELS}", f"--max_images={MAX_IMAGES}"], port)
    yield f"http://127.0.0.1:{port}", out
    proc.terminate()
    proc.wait(30)


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (its pixel data is a few bytes)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                              0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def _digits(n):
    return sources.create(tiny_config()).eval.images[:n]


def _expected(out, x):
    a = artifact.Artifact(out)
    return a.probs({(a.image_size, a.crop_frac): x})


def test_endpoints_answer_with_the_exported_probabilities(server):
    base, out = server
    health = httpx.get(f"{base}/health").json()
    assert health["status"] == "ok" and health["buckets"] == batching.buckets(MAX_BATCH)
    assert health["compilations"] == len(health["buckets"]) == 4  # all compiled at start
    assert httpx.get(f"{base}/metadata").json() == artifact.read_metadata(out)
    page = httpx.get(f"{base}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'fetch("predict?top_k=5"' in page.text and 'id="drop"' in page.text

    x = _digits(3)
    expected = _expected(out, x)
    r = httpx.post(f"{base}/predict?top_k=3", content=_png(x[0]),
                   headers={"Content-Type": "image/png"})
    assert r.status_code == 200
    top = np.argsort(-expected[0], kind="stable")[:3]
    (pred,) = r.json()["predictions"]
    assert pred["name"] == "image" and [t["label"] for t in pred["top_k"]] == [str(j)
                                                                               for j in top]
    np.testing.assert_allclose([t["probability"] for t in pred["top_k"]], expected[0][top],
                               atol=1e-6)

    before = httpx.get(f"{base}/health").json()["batches"]
    files = [("file", (f"{i}.png", _png(image), "image/png")) for i, image in enumerate(x)]
    r = httpx.post(f"{base}/predict?top_k=10", files=files)
    assert r.status_code == 200
    preds = r.json()["predictions"]
    assert [p["name"] for p in preds] == ["0.png", "1.png", "2.png"]
    for p, e in zip(preds, expected, strict=True):
        got = {t["label"]: t["probability"] for t in p["top_k"]}
        np.testing.assert_allclose([got[str(j)] for j in range(10)], e, atol=1e-6)
    assert httpx.get(f"{base}/health").json()["batches"] == before + 1  # one batch of three


def test_bad_input_gets_an_exact_4xx_and_the_server_keeps_serving(server):
    base, out = server
    jpeg = load.synthetic_jpegs(1, 64)[0]
    raw = {"Content-Type": "image/jpeg"}
    cases = [
        (dict(content=b"hello", headers={"Content-Type": "text/plain"}), 415,
         "unsupported content type 'text/plain': send image/*, application/octet-stream or "
         "multipart/form-data"),
        (dict(content=b"", headers=raw), 400,
         "empty body: send image bytes or multipart/form-data files"),
        (dict(content=b"this is not an image", headers=raw), 400,
         "image 1 (image) is not a readable image (unknown format)"),
        (dict(content=jpeg[:len(jpeg) // 2], headers=raw), 400,
         re.compile(r"image 1 \(image\) is not a readable image \(OSError: image file is "
                    r"truncated \(\d+ bytes not processed\)\)")),
        (dict(content=_png_header(20000, 20000), headers=raw), 413,
         f"image 1 (image) is too large: 400000000 pixels, over the limit of {MAX_PIXELS} "
         "(--max_pixels)"),
        (dict(content=_png_header(2000, 2000), headers=raw), 413,
         f"image 1 (image) is too large: 2000x2000 pixels, over the limit of {MAX_PIXELS} "
         "(--max_pixels)"),
        (dict(content=b"\0" * (MAX_BYTES + 1), headers=raw), 413,
         f"request body of {MAX_BYTES + 1} bytes is over the limit of {MAX_BYTES} bytes "
         "(--max_request_bytes)"),
        (dict(content=iter([b"\0" * 60_000] * 2), headers=raw), 413,  # chunked, no length
         f"request body is over the limit of {MAX_BYTES} bytes (--max_request_bytes)"),
        (dict(files=[("f", (f"{i}.jpg", jpeg, "image/jpeg")) for i in range(MAX_IMAGES + 1)]),
         413, f"more than {MAX_IMAGES} images in one request (--max_images)"),
        (dict(content=b'--x\r\nContent-Disposition: form-data; name="note"\r\n\r\nno file'
                      b"\r\n--x--\r\n",
              headers={"Content-Type": "multipart/form-data; boundary=x"}), 400,
         "multipart body holds no files"),
        (dict(files=[("f", ("a.jpg", jpeg, "image/jpeg")), ("g", ("b.txt", b"text", "x/y"))]),
         400, "image 2 (b.txt) is not a readable image (unknown format)"),
    ]
    for kwargs, status, message in cases:
        r = httpx.post(f"{base}/predict", **kwargs)
        detail = r.json()["detail"]
        assert r.status_code == status, detail
        assert (message.fullmatch(detail) if isinstance(message, re.Pattern)
                else detail == message), detail
    r = httpx.post(f"{base}/predict", content=jpeg, headers=raw)
    assert r.status_code == 200 and len(r.json()["predictions"][0]["top_k"]) == 5
    assert httpx.get(f"{base}/health").json()["compilations"] == 4


def test_concurrent_requests_are_micro_batched_without_recompiling(server):
    base, _ = server
    images = [_png(x) for x in _digits(6)]

    async def burst():
        async with httpx.AsyncClient(timeout=60) as http:
            before = (await http.get(f"{base}/health")).json()
            sizes = [1, 2, 3, 1, 4, 1, 2, 3, 1, 1, 4, 2]  # 25 images in 12 requests
            rs = await asyncio.gather(*(http.post(f"{base}/predict", files=[
                ("f", (f"{j}.png", images[(i + j) % 6], "image/png")) for j in range(n)])
                for i, n in enumerate(sizes)))
            after = (await http.get(f"{base}/health")).json()
        return sizes, rs, before, after

    sizes, rs, before, after = asyncio.run(burst())
    assert [r.status_code for r in rs] == [200] * len(sizes)
    assert [len(r.json()["predictions"]) for r in rs] == sizes
    assert after["images"] - before["images"] == sum(sizes)
    assert after["batches"] - before["batches"] < len(sizes)  # requests shared batches
    assert after["compilations"] == before["compilations"] == 4


def test_a_workdir_serves_the_same_function_as_its_export(exported_run):
    workdir, out, meta = exported_run
    served = model.from_workdir(workdir, "last")
    x = _digits(5)
    np.testing.assert_allclose(np.asarray(served.fn(x)), _expected(out, x), atol=1e-6)
    assert served.metadata["temperature"] == meta["temperature"] == 2.5
    assert served.class_names == meta["class_names"] and served.image_size == 8
    assert json.dumps(served.metadata)  # GET /metadata serialises it
    assert os.path.isdir(out)


def test_a_request_past_the_timeout_gets_504_and_the_server_keeps_serving():
    """An in-process uvicorn around a model that takes 0.5 s per batch, with a 0.1 s limit."""
    import threading
    import time

    import uvicorn

    from jaxcls.serve.app import Settings, create_app

    class Slow:
        calls = 0

        def __call__(self, x):
            Slow.calls += 1
            time.sleep(0.5)
            return np.full((len(x), 2), 0.5, np.float32)

        def _cache_size(self):
            return 0

    served = model.Served(Slow(), ["a", "b"], 8, 1.0, {"class_names": ["a", "b"]})
    app = create_app(served, Settings(timeout_s=0.1, warm_up=False, max_wait_ms=1))
    port = load.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        png = _png(np.zeros((8, 8, 3), np.uint8))
        r = httpx.post(f"{base}/predict", content=png, headers={"Content-Type": "image/png"})
        assert (r.status_code, r.json()) == (504, {"detail": "no answer within 0.1 s "
                                                             "(--timeout_s)"})
        assert httpx.get(f"{base}/health").json()["status"] == "ok"
        assert httpx.get(f"{base}/metadata").json() == {"class_names": ["a", "b"]}
        time.sleep(0.6)  # the slow batch finishes; its answer has nobody to go to
        assert Slow.calls == 1
    finally:
        server.should_exit = True
        thread.join(10)


def test_load_test_is_bounded_and_loses_nothing(server):
    base, _ = server
    result = asyncio.run(load.run_load(base, load.synthetic_jpegs(4, 16), clients=3,
                                       seconds=1.0, images_per_request=2))
    assert result["requests"] > 0 and result["failed"] == 0 and not result["first_failures"]
    assert result["compilations_before"] == result["compilations_after"] == 4
    assert result["p50_ms"] <= result["p99_ms"] and result["rss_mib_after"] > 0
    with pytest.raises(ValueError, match=r"--clients must be in \[1, 64\]"):
        asyncio.run(load.run_load(base, [], clients=65, seconds=1.0))
    with pytest.raises(ValueError, match="only targets this machine"):
        asyncio.run(load.run_load("http://example.com:80", [], clients=1, seconds=1.0))
