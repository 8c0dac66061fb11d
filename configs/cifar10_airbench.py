"""CIFAR-10 in about ten epochs: airbench94 (Keller Jordan's cifar10-airbench) through jaxcls.

The network (`jaxcls/models/airbench.py`: frozen 2x2 whitening conv set from the patch
statistics of 5,000 training images, widths 64/256/256, BatchNorm without scale, GELU), Nesterov
SGD (momentum 0.85, decoupled weight decay on every parameter, BatchNorm biases at 64x the
learning rate, the whitening bias trained for 3 epochs only), label smoothing 0.2, lookahead
every 5 steps, the alternating flip and a 2-px reflect translate, and 6-view TTA (mirror x
+-1 px translate, logits averaged with airbench's weights) in the final eval.

    python -m jaxcls.main --config=configs/cifar10_airbench.py --workdir=runs/airbench

airbench sums the loss over the batch; jaxcls averages it, so the learning rate here is
airbench's 11.5 / (1024 (1 + 1 / (1 - 0.85))) per summed example times 1024 = 1.5, and the
decay per step 0.0153 / (1 + 1 / 0.15) (`decoupled_decay`: independent of the multipliers). The
Muon variant is configs/cifar10_airbench_muon.py.

Measured: the full 475-step run (9.9 epochs) not yet: on the shared 2-core CPU (load average
12-14) a step of 1024 took 74.5 s (median), about 10 h for the run. A short real run
(2026-12-03, 2-core AMD EPYC CPU shared with other jobs), the command above plus
`--config.num_steps=16 --config.log_every_steps=4 --config.eval_tta=` (the recipe compressed
to 16 steps, a third of an epoch; no TTA): train loss 2.25 (steps 1-4) -> 1.77 (steps 13-16),
47.98% test top-1 (top-5 92.28%), 1396 s wall (decoding the 60,000 JPEGs into RAM about 50 s,
the eval of 10,000 images 142 s); the same checkpoint with the 6-view TTA (`python -m
jaxcls.evaluate --workdir=W "--tta=translate(1)|flip"`, probabilities averaged): 48.64%.
See BENCHMARKS.md.
"""

from jaxcls import defaults

_MOMENTUM = 0.85
_KILOSTEP = 1 + 1 / (1 - _MOMENTUM)  # airbench's lr and wd are per 1024 examples x this


def get_config():
    config = defaults.get_config()
    config.dataset = "folder:../shared/data/cifar10"  # CIFAR-10 as JPEG files, decoded into RAM
    config.image_size = 32
    config.mean = (0.4914, 0.4822, 0.4465)  # CIFAR-10 channel statistics
    config.std = (0.2470, 0.2435, 0.2616)
    # every image mirrored in alternate epochs (its first epoch a coin flip), then shifted by up
    # to 2 px each way with reflect padding
    config.augment = "flip_alternate|crop(2, padding_mode='reflect')"
    config.eval_tta = "translate(1)|flip"  # 6 views: (no shift, up-left, down-right) x mirror
    config.model = "airbench94"
    config.whiten_init = "whiten/kernel"  # eigenvectors of 2x2 patch statistics, then frozen
    config.whiten_init_images = 5000
    config.freeze = ("whiten/kernel",)
    config.freeze_epochs = (("whiten/bias", 3),)  # the whitening bias trains for 3 epochs
    config.batch_size = 1024
    config.num_epochs = 9.9
    config.optimizer = "sgd"
    config.momentum = _MOMENTUM
    config.nesterov = True
    config.learning_rate = 11.5 / _KILOSTEP  # 1.5 on the mean loss (airbench: per summed loss)
    config.lr_multipliers = ((r"group\d/norm\d/bias", 64.0),)  # BatchNorm biases
    config.weight_decay = 0.0153 / _KILOSTEP  # decay per step at the peak learning rate
    config.decoupled_decay = True  # ... whatever the parameter's lr multiplier
    config.decay_all = True  # biases too
    config.schedule = "piecewise_linear"
    config.schedule_points = ((0.0, 0.2), (0.23, 1.0), (1.0, 0.07))  # x learning_rate
    config.label_smoothing = 0.2
    config.lookahead_every = 5  # slow weights keep 0.95^5 (step / steps)^3 at each sync
    config.lookahead_decay = 0.95**5
    config.lookahead_power = 3.0
    config.log_every_steps = 12  # four progress lines per epoch (48 steps of 1024)
    config.checkpoint_every_steps = 1000  # (saved at the end; a run is 475 steps)
    return config
