"""timm's eager train step on CPU (or GPU), the peer of jaxcls's compiled step in `vs_timm`.

torch and timm are imported when a step is built, never by jaxcls itself: they are test
extras, not runtime dependencies. The registry's torchvision is built against CUDA torch; its
C-op registrations are skipped so that timm imports beside the CPU torch (../shared/DESIGN.md).
"""

import sys
import types

import numpy as np


def import_timm():
    """(torch, timm), importable beside the CPU torch."""
    sys.modules.setdefault("torchvision._meta_registrations",
                           types.ModuleType("torchvision._meta_registrations"))
    import timm
    import torch

    return torch, timm


def create_model(name: str, num_classes: int, cifar_stem: bool = False, **kwargs):
    """timm model `name` (with `kwargs`), randomly initialised; `cifar_stem`: a ResNet's 7x7/2
    stem conv and max-pool replaced by one 3x3/1 conv, as jaxcls's stem="cifar"."""
    torch, timm = import_timm()
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    if cifar_stem:
        model.conv1 = torch.nn.Conv2d(3, model.conv1.out_channels, 3, 1, 1, bias=False)
        model.maxpool = torch.nn.Identity()
    return model


class TimmStep:
    """Forward + label-smoothed cross-entropy + backward + AdamW of `model` on one fixed batch
    (images NHWC float, already normalised), eager; bfloat16 under autocast. Each call runs
    one step (eager torch on CPU returns when the step is done)."""

    def __init__(self, model, images: np.ndarray, labels: np.ndarray, label_smoothing: float,
                 learning_rate: float, weight_decay: float, dtype: str = "float32"):
        torch, _ = import_timm()
        self.torch, self.model = torch, model.train()
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        self.x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(
            self.device)
        self.y = torch.from_numpy(np.asarray(labels, np.int64)).to(self.device)
        self.opt = torch.optim.AdamW(model.parameters(), lr=learning_rate,
                                     weight_decay=weight_decay)
        self.loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.autocast = dtype == "bfloat16"
        self.last_loss = None  # the last step's loss (of the parameters before the step)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def loss(self):
        with self.torch.autocast(self.device, dtype=self.torch.bfloat16, enabled=self.autocast):
            return self.loss_fn(self.model(self.x).float(), self.y)

    def __call__(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss()
        loss.backward()
        self.last_loss = loss.detach()
        self.opt.step()
        if self.device == "cuda":
            self.torch.cuda.synchronize()

