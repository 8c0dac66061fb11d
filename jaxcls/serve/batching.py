"""Micro-batching: requests' images are gathered for up to `max_wait_ms` (or until `max_batch`
images) and run as one call of the compiled predict function, padded to the smallest bucket
that fits, so the function only ever sees len(buckets(max_batch)) shapes and never recompiles
under load. The device work runs on one worker thread; the event loop keeps accepting."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def buckets(max_batch: int) -> list[int]:
    """The padded batch sizes: powers of two below `max_batch`, then `max_batch`."""
    if max_batch < 1:
        raise ValueError(f"--max_batch={max_batch}: must be >= 1")
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return sizes + [max_batch]


def pad_to_bucket(x: np.ndarray, sizes: list[int]) -> np.ndarray:
    """`x` [n, ...] zero-padded along the batch to the smallest size in `sizes` >= n."""
    target = next(b for b in sizes if b >= len(x))
    return np.concatenate([x, np.zeros((target - len(x), *x.shape[1:]), x.dtype)])


class MicroBatcher:
    """Runs fn(uint8 [B, S, S, 3]) -> probs [B, C] on batches gathered across requests."""

    def __init__(self, fn, max_batch: int = 32, max_wait_ms: float = 5.0):
        self.fn, self.max_batch, self.max_wait = fn, max_batch, max_wait_ms / 1000.0
        self.sizes = buckets(max_batch)
        self.batches = self.images = 0  # counters reported by GET /health
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="predict")

    def start(self) -> None:
        """Starts the gathering loop on the running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._worker.shutdown(wait=True)

    async def predict(self, images: np.ndarray) -> np.ndarray:
        """Probabilities [n, C] for uint8 images [n, S, S, 3] (split into max_batch chunks)."""
        loop = asyncio.get_running_loop()
        futures = []
        for start in range(0, len(images), self.max_batch):
            future = loop.create_future()
            self._queue.put_nowait((images[start:start + self.max_batch], future))
            futures.append(future)
        return np.concatenate(await asyncio.gather(*futures))

    def _run(self, padded: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(padded))

    async def _gather(self, first) -> tuple[list, object]:
        """Items to run together starting with `first`, and the item that did not fit."""
        loop = asyncio.get_running_loop()
        items, n = [first], len(first[0])
        deadline = loop.time() + self.max_wait
        while n < self.max_batch:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                item = await asyncio.wait_for(self._queue.get(), remaining)
            except TimeoutError:
                break
            if n + len(item[0]) > self.max_batch:
                return items, item
            items.append(item)
            n += len(item[0])
        return items, None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        carried = None
        while True:
            first = carried or await self._queue.get()
            items, carried = await self._gather(first)
            items = [(x, f) for x, f in items if not f.done()]  # timed-out requests: dropped
            if not items:
                continue
            x = np.concatenate([x for x, _ in items])
            try:
                padded = pad_to_bucket(x, self.sizes)
                probs = await loop.run_in_executor(self._worker, self._run, padded)
            except Exception as e:  # the model failed: every waiting request gets the error
                for _, f in items:
                    if not f.done():
                        f.set_exception(e)
                continue
            self.batches += 1
            self.images += len(x)
            start = 0
            for chunk, f in items:
                if not f.done():
                    f.set_result(probs[start:start + len(chunk)])
                start += len(chunk)
