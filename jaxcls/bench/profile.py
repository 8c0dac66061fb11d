"""Where a compiled step's time goes on XLA:CPU: a jax.profiler trace of a few steps, its
thunk events (one per fusion, convolution, dot, YNNPACK call, ...) summed by kind.

    python -m jaxcls.benchmark --vs_timm --profile --models=convnext_tiny [--steps=N]
"""

import collections
import glob
import os
import re
import tempfile

import jax

# Thunk events of XLA:CPU's runtime threads; the rest (waits, thread-pool bookkeeping, the
# Python line) are not work.
_WORK_LINES = ("tf_XLAPjRtCpuClient", "tf_XLAEigen")
_NOT_WORK = re.compile(r"^(ThreadpoolListener|SlinkyThreadPool|ThunkExecutor|end: )")


def kind(event_name: str) -> str:
    """'convolution.12' -> 'convolution', 'loop_multiply_fusion.3' -> 'loop_multiply_fusion'."""
    return re.sub(r"(\.\d+)+$", "", event_name)


def group(event_kind: str) -> str:
    """A coarse class of a thunk kind: library calls, XLA's own convolutions and dots, data
    movement, reductions, the elementwise rest."""
    if "ynn" in event_kind or "xnn" in event_kind or "onednn" in event_kind:
        return "library (YNNPACK/XNNPACK/oneDNN: dots, convs)"
    if "convolution" in event_kind:
        return "convolution (XLA)"
    if event_kind == "dot" or event_kind.startswith("dot"):
        return "dot (XLA)"
    if any(k in event_kind for k in ("copy", "transpose", "slice", "pad", "concatenate")):
        return "copy/transpose/slice/pad"
    if "reduce" in event_kind:
        return "reductions"
    return "elementwise fusions"


def grouped(times: dict[str, float]) -> dict[str, float]:
    """op_times summed by `group`, largest first."""
    totals = collections.Counter()
    for k, v in times.items():
        totals[group(k)] += v
    return {k: round(v, 1) for k, v in totals.most_common()}


def op_times(step, num_steps: int = 2) -> dict[str, float]:
    """ms per step of each kind of thunk while `step()` runs `num_steps` times (summed over
    threads, so CPU time), largest first."""
    from jax._src.lib import _profile_data

    step()  # compiled and warm before tracing
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp)
        for _ in range(num_steps):
            step()
        jax.profiler.stop_trace()
        (path,) = glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True)
        data = _profile_data.ProfileData.from_file(path)
    totals = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            if not line.name.startswith(_WORK_LINES):
                continue
            for event in line.events:
                if not _NOT_WORK.match(event.name):
                    totals[kind(event.name)] += event.duration_ns / 1e6 / num_steps
    return {k: round(v, 1) for k, v in totals.most_common()}
