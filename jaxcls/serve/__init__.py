"""An HTTP prediction server for a run or an exported run (FastAPI + uvicorn; the `serve` extra).

    python -m jaxcls.serve --workdir=W [--checkpoint=best] [--ema] [--tta=flip]
    python -m jaxcls.serve --exported=DIR
        [--host=127.0.0.1 --port=8000 --max_batch=32 --max_wait_ms=5 --timeout_s=30
         --max_request_bytes=20971520 --max_pixels=40000000 --max_images=64]

- POST /predict[?top_k=5]: one image as the body (image/*, application/octet-stream) or several
  as multipart/form-data files -> {"predictions": [{"name", "top_k": [{"label",
  "probability"}]}]} in request order.
- GET /health: status, compilations so far, buckets, batches and images run, resident memory.
- GET /metadata: the export metadata (class names, input size, preprocessing, source).
- GET /: a page to drop an image on and see its top-5.

Images of all requests are micro-batched (app.Settings, batching.py) onto one jitted function
padded to power-of-two buckets, all compiled at start: no compilation under load. Bad input is
a 4xx with a one-line {"detail"} (inputs.py): 400 empty body, unreadable or truncated image;
413 body, pixel count (read from the header, before decoding) or image count over the limit;
415 other content types; 504 past --timeout_s. Load test: python -m jaxcls.serve.load.
"""
