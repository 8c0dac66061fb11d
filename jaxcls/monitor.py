"""Watching an eval metric over a run: early stopping and the plateau learning-rate cut.

Both are pure functions of the metric's history (the eval lines of metrics.jsonl), so a resumed
run, which reads that history back, decides exactly as an uninterrupted one.
"""

import dataclasses
from collections.abc import Sequence

import ml_collections

from jaxcls import metrics


def higher_is_better(metric: str) -> bool:
    """loss is minimised; every other eval metric (accuracy, top5, mAP, ...) maximised."""
    return metric != "loss"


def improved(values: Sequence[float], higher: bool, min_delta: float) -> list[bool]:
    """For each value: did it beat the best before it by more than min_delta? (The first does.)"""
    out, best = [], None
    for v in values:
        gain = None if best is None else (v - best if higher else best - v)
        out.append(gain is None or gain > min_delta)
        if out[-1]:
            best = v
    return out


def evals_since_best(values: Sequence[float], higher: bool, min_delta: float) -> int:
    """Evaluations since the last improvement (0 when the latest one improved)."""
    flags = improved(values, higher, min_delta)
    return flags[::-1].index(True) if flags else 0


def plateau_scale(values: Sequence[float], higher: bool, patience: int, factor: float,
                  min_delta: float, min_scale: float = 0.0) -> float:
    """The learning-rate multiplier after these evaluations: times `factor` (never below
    min_scale) each time `patience` evaluations in a row did not improve; the count restarts
    after every cut."""
    scale, stalled = 1.0, 0
    for better in improved(values, higher, min_delta):
        stalled = 0 if better else stalled + 1
        if stalled >= patience:
            scale, stalled = max(scale * factor, min_scale), 0
    return scale


def eval_metrics(task: str) -> tuple[str, ...]:
    """The keys of a `task`'s eval lines in metrics.jsonl."""
    cls = metrics.MultilabelEvalMetrics if task == "multilabel" else metrics.Metrics
    return tuple(f.name for f in dataclasses.fields(cls))


def check(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming a bad early-stopping or plateau key."""
    names = eval_metrics(config.task)
    watched = [("early_stopping_metric", config.early_stopping_metric)] * bool(
        config.early_stopping_metric)
    if config.schedule == "plateau":
        watched.append(("plateau_metric", config.plateau_metric))
        if not 0.0 < config.plateau_factor < 1.0:
            raise ValueError(f"config.plateau_factor={config.plateau_factor} must be in (0, 1)")
        if config.plateau_min_learning_rate < 0:
            raise ValueError(f"config.plateau_min_learning_rate="
                             f"{config.plateau_min_learning_rate} must be >= 0")
    for key, metric in watched:
        if metric not in names:
            raise ValueError(f"config.{key}={metric!r}: a {config.task} run's eval lines have "
                             f"{list(names)}")
        if config.eval_every_steps is None and config.eval_every_epochs is None:
            raise ValueError(f"config.{key} watches evaluations: set config.eval_every_epochs "
                             f"or config.eval_every_steps")
        prefix = key.rsplit("_", 1)[0]
        if config[f"{prefix}_patience"] < 1 or config[f"{prefix}_min_delta"] < 0:
            raise ValueError(f"config.{prefix}_patience must be >= 1 and config.{prefix}_min_delta"
                             f" >= 0")
