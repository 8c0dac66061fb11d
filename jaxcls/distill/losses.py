"""Knowledge-distillation losses, per example [N] (the caller masks and averages).

Teacher logits come in frozen (the caller stops their gradient); the student's label loss is
the run's own (`jaxcls.losses.make_loss`: label smoothing, class weights, mixup's soft targets).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxcls import losses

LOSSES = ("kl", "hard", "deit", "function_matching")


def kl_divergence(student_logits: jax.Array, teacher_logits: jax.Array,
                  temperature: float = 1.0) -> jax.Array:
    """T^2 KL(softmax(teacher / T) || softmax(student / T)) per example -> [N] (Hinton et al.
    2015: the T^2 keeps the soft term's gradients on the scale of the label loss's)."""
    t = temperature
    log_p_student = jax.nn.log_softmax(student_logits.astype(jnp.float32) / t)
    log_p_teacher = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / t)
    return t * t * jnp.sum(jnp.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)


def hard_cross_entropy(student_logits: jax.Array, teacher_logits: jax.Array) -> jax.Array:
    """Cross-entropy of the student against the teacher's top-1 class -> [N]."""
    return losses.softmax_cross_entropy(student_logits, jnp.argmax(teacher_logits, axis=-1))


def distillation_loss(name: str, output, targets: jax.Array, teacher_logits: jax.Array,
                      label_loss: Callable[[jax.Array, jax.Array], jax.Array],
                      alpha: float, temperature: float) -> tuple[jax.Array, jax.Array]:
    """(loss [N], the student's logits for the metrics) of loss `name` (LOSSES):

    - kl: (1 - alpha) label_loss + alpha T^2 KL(teacher_T || student_T);
    - hard: (1 - alpha) label_loss + alpha CE(student, argmax teacher);
    - deit: `output` is (class-token logits, distillation-token logits) (a deit_*_distilled
      model with distillation_output=True): (1 - alpha) label_loss on the first + alpha
      CE(second, argmax teacher), DeiT's hard distillation (alpha 0.5 in the paper; timm's
      TokenDistillationTask, distill_type='hard'); the metrics see the mean of both heads, the
      prediction the model makes in eval;
    - function_matching: T^2 KL alone, no labels (Beyer et al. 2022, "patient and consistent":
      the teacher sees the student's view).
    """
    if name == "deit":
        cls, dist = output
        loss = ((1.0 - alpha) * label_loss(cls, targets)
                + alpha * hard_cross_entropy(dist, teacher_logits))
        return loss, (cls + dist) / 2
    if name == "function_matching":
        return kl_divergence(output, teacher_logits, temperature), output
    teacher_term = (kl_divergence(output, teacher_logits, temperature) if name == "kl"
                    else hard_cross_entropy(output, teacher_logits))
    return (1.0 - alpha) * label_loss(output, targets) + alpha * teacher_term, output


def agreement(student_logits: jax.Array, teacher_logits: jax.Array) -> jax.Array:
    """1.0 where the student's and the teacher's top-1 classes agree, else 0 -> [N]."""
    return (jnp.argmax(student_logits, -1) == jnp.argmax(teacher_logits, -1)).astype(jnp.float32)
