"""Unsupervised domain adaptation: DANN (Ganin et al. 2016) inside the jitted train step.

    python -m jaxcls.main --config=configs/cifar10_small.py --workdir=runs/dann \\
        --config.domain_adaptation.target=folder:PATH/target_images

`config.domain_adaptation.target` names the target domain's images (any dataset spec; the
labels of its training split are never read). Every train step draws a batch from each domain;
source and target images go through the model in one forward pass (so BatchNorm statistics
cover both domains), the labelled loss sees the source half, and a domain classifier
(`dann.DomainClassifier`, its parameters the train state's `params["domain_classifier"]`) sees
the penultimate features of both halves (the input of the model's `head`, captured as
`jaxcls.probe.features` does) through a gradient reversal layer whose scale ramps as
2 / (1 + exp(-gamma p)) - 1 over the run's progress p (`grl.py`). When the target dataset has
labelled held-out images with the source's classes, every eval also reports them as split
`eval_target` in metrics.jsonl. The target iterator's position is checkpointed beside the
source's, so a resumed run draws the same target batches.

Measured (2026-12-03, 2-core AMD EPYC CPU; `python -m jaxcls.adapt.demo --shift=blend
--weight=0.1 --seeds=0,1`): digits -> MNIST-M-style blended digits, target top-1 35.6% / 44.2%
with DANN against 27.2% / 38.3% source-only (seeds 0 / 1); at weight 1.0, DANN lost to
source-only on that shift and on inverted digits (BENCHMARKS.md, "Domain adaptation").
"""

import jax
import jax.numpy as jnp
import ml_collections

from jaxcls import defaults
from jaxcls.adapt.dann import PARAMS_KEY, DomainClassifier, domain_loss
from jaxcls.adapt.grl import dann_lambda, reverse_gradient

__all__ = ["PARAMS_KEY", "DomainClassifier", "check", "classifier", "dann_lambda",
           "domain_loss", "enabled", "init_params", "reverse_gradient", "target_config"]


def enabled(config: ml_collections.ConfigDict) -> bool:
    return bool(config.domain_adaptation.target)


def check(config: ml_collections.ConfigDict) -> None:
    """Fails on a config.domain_adaptation key or value DANN cannot use, naming it."""
    d = config.domain_adaptation
    unknown = sorted(set(d.keys()) - set(defaults.get_config().domain_adaptation.keys()))
    if unknown:
        raise ValueError(f"unknown config.domain_adaptation key(s) {unknown}; valid keys are "
                         f"listed in jaxcls/defaults.py")
    if not enabled(config):
        return
    if d.weight < 0 or d.gamma < 0 or d.hidden < 0:
        raise ValueError(f"config.domain_adaptation: weight={d.weight}, gamma={d.gamma} and "
                         f"hidden={d.hidden} must be >= 0")
    if config.task != "multiclass":
        raise ValueError(f"config.domain_adaptation needs task='multiclass', not "
                         f"{config.task!r}")
    if config.distill.teacher:
        raise ValueError("config.domain_adaptation and config.distill together are not "
                         "supported: set one of them")
    kind = d.target.partition(":")[0]
    if kind not in ("folder", "tfds", "digits", "synthetic"):
        raise ValueError(f"config.domain_adaptation.target={d.target!r} is not a dataset spec "
                         f"(folder:PATH, tfds:NAME, digits, synthetic)")


def target_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` reading the target domain as its dataset (no val split)."""
    target = config.copy_and_resolve_references()
    target.dataset, target.val_fraction = config.domain_adaptation.target, 0.0
    return target


def classifier(config: ml_collections.ConfigDict) -> DomainClassifier:
    return DomainClassifier(hidden=config.domain_adaptation.hidden)


def init_params(config: ml_collections.ConfigDict, rng: jax.Array, params: dict) -> dict:
    """{PARAMS_KEY: a fresh domain classifier} for a model with `params` (its `head` kernel
    gives the feature width)."""
    width = params["head"]["kernel"].shape[0]
    return {PARAMS_KEY: classifier(config).init(jax.random.fold_in(rng, 17),
                                                jnp.zeros((1, width)))["params"]}
