"""The calls ``benchmarks/speed.py`` compares: timm's ViT and DCAL on the same weights, eval forwards and train
steps."""
import contextlib
import copy
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn.functional as F

from benchmarks import measure
from dcal_plugin.core import DCALViT, UncertaintyWeightedLoss, num_local_queries

NUM_CLASSES = 200  # CUB-200-2011
LOCAL_QUERY_RATIO = 0.1  # the paper's FGVC value


def build_pair(model_name: str, img_size: int, device: torch.device) -> Tuple[torch.nn.Module, DCALViT]:
    """timm's model and a DCALViT around a deep copy of it: identical SA weights."""
    torch.manual_seed(0)
    vit = timm.create_model(model_name, pretrained=False, num_classes=NUM_CLASSES, img_size=img_size)
    dcal = DCALViT(copy.deepcopy(vit), local_query_ratio=LOCAL_QUERY_RATIO)
    return vit.to(device), dcal.to(device)


def adamw(params: List[torch.nn.Parameter], no_decay: Sequence[torch.nn.Parameter] = ()) -> torch.optim.Optimizer:
    """The paper's optimiser for both models: Adam(W), weight decay 0.05, lr 5e-4/512 × batch."""
    groups = [dict(params=params, weight_decay=0.05)]
    if no_decay:
        groups.append(dict(params=list(no_decay), weight_decay=0.0))
    return torch.optim.AdamW(groups, lr=5e-4 / 512 * 16)


@dataclass
class Workloads:
    """One case's models and the zero-argument calls timed, counted and measured on them.

    ``eval``: ``timm_eval``, ``dcal_eval`` (SA + GLCA + rollout) and ``sa_only_eval`` (a DCALViT
    built with ``sa_only_inference=True`` around the same timm module), under ``torch.no_grad``.
    ``reference_eval``: DCAL's eval forward with autograd recording, i.e. fused attention and maps
    recomputed beside it (the issue's straightforward exact design; for FLOP counts only).
    ``train``: ``timm_train`` and ``dcal_train``, one AdamW step each (DCAL: the three branches'
    cross-entropy, uncertainty-weighted). ``resident``: per train call, the bytes live when it starts.
    """

    vit: torch.nn.Module
    dcal: DCALViT
    eval: Dict[str, Callable[[], object]]
    reference_eval: Callable[[], object]
    train: Dict[str, Callable[[], object]]
    resident: Dict[str, Callable[[], int]]
    tokens: int
    local_queries: int

    def eval_mode(self) -> None:
        """Every model in eval mode."""
        self.vit.eval(), self.dcal.eval()

    def train_mode(self) -> None:
        """Every model in train mode."""
        self.vit.train(), self.dcal.train()


def build_workloads(model_name: str, img_size: int, batch: int, device: torch.device,
                    autocast_dtype: Optional[torch.dtype] = None) -> Workloads:
    """The calls of one (model, size, batch) case on seeded images ``[batch, 3, img_size, img_size]`` and labels."""
    vit, dcal = build_pair(model_name, img_size, device)
    sa_only = DCALViT(dcal.vit, local_query_ratio=LOCAL_QUERY_RATIO, sa_only_inference=True).to(device).eval()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, img_size, img_size, generator=generator).to(device)
    labels = torch.randint(0, NUM_CLASSES, (batch,), generator=generator).to(device)

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)

    def no_grad_call(model: torch.nn.Module) -> Callable[[], object]:
        def call():
            with torch.no_grad(), autocast():
                return model(images)
        return call

    def reference_eval():
        with torch.enable_grad(), autocast():
            return dcal(images)

    weighting = UncertaintyWeightedLoss().to(device)
    optimizers = dict(timm_train=adamw(list(vit.parameters())),
                      dcal_train=adamw(list(dcal.parameters()), no_decay=list(weighting.parameters())))

    def timm_train():
        with autocast():
            loss = F.cross_entropy(vit(images), labels)
        _step(loss, optimizers['timm_train'])

    def dcal_train():
        with autocast():
            out = dcal(images)
            losses = [F.cross_entropy(logits, labels) for logits in (out.sa_logits, out.glca_logits, out.pwca_logits)]
        _step(weighting(losses), optimizers['dcal_train'])

    def resident(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Callable[[], int]:
        def live() -> int:
            state = [t for s in optimizer.state.values() for t in s.values()]
            params = [p for group in optimizer.param_groups for p in group['params']]
            return measure.live_bytes(list(model.parameters()) + params + state + [images, labels])
        return live

    num_patches = dcal.vit.patch_embed.num_patches
    return Workloads(
        vit=vit, dcal=dcal, eval=dict(timm_eval=no_grad_call(vit), dcal_eval=no_grad_call(dcal),
                                      sa_only_eval=no_grad_call(sa_only)),
        reference_eval=reference_eval, train=dict(timm_train=timm_train, dcal_train=dcal_train),
        resident=dict(timm_train=resident(vit, optimizers['timm_train']),
                      dcal_train=resident(dcal, optimizers['dcal_train'])),
        tokens=num_patches + 1, local_queries=num_local_queries(num_patches, LOCAL_QUERY_RATIO))


def _step(loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
    """Backward, optimiser step, gradients freed."""
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

