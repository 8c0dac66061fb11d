"""Train/eval metrics as clu collections: masked averages of loss, top-1 and top-5."""

import dataclasses

import flax
import jax
import jax.numpy as jnp
from clu import metrics


@flax.struct.dataclass
class Metrics(metrics.Collection):
    loss: metrics.Average.from_output("loss")
    accuracy: metrics.Average.from_output("correct1")
    top5: metrics.Average.from_output("correct5")


@flax.struct.dataclass
class TrainMetrics(Metrics):
    grad_norm: metrics.Average.from_output("grad_norm")  # before clipping, one value per step


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """1.0 where the label is among the k highest logits (ties broken by top_k's order), else 0."""
    k = min(k, logits.shape[-1])
    _, top = jax.lax.top_k(logits, k)
    return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def gather(loss: jax.Array, logits: jax.Array, labels: jax.Array, mask: jax.Array) -> Metrics:
    """Per-example values -> a Metrics collection that counts only mask == 1 examples."""
    return Metrics.single_from_model_output(
        loss=loss, correct1=topk_correct(logits, labels, 1),
        correct5=topk_correct(logits, labels, 5), mask=mask)


def with_grad_norm(m: Metrics, grad_norm: jax.Array) -> TrainMetrics:
    """`m` plus the step's global gradient norm."""
    fields = {f.name: getattr(m, f.name) for f in dataclasses.fields(m)}
    return TrainMetrics(**fields, grad_norm=metrics.Average.from_model_output(grad_norm))


def to_host(collection: Metrics) -> dict[str, float]:
    """Final values as Python floats (a host sync: call at log points only)."""
    return {k: float(v) for k, v in jax.device_get(collection.compute()).items()}
