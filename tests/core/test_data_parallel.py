"""Train-mode outputs that ``nn.DataParallel``'s gather joins (it refuses CPU tensors, so its tensor op is swapped for a
cat)."""
import pytest
import torch
from torch.nn.parallel import _functions, scatter_gather

from dcal_plugin.core import DCALOutput, DCALViT

from ..conftest import make_tiny_vit


@pytest.fixture
def cpu_gather(monkeypatch):
    """torch's own ``gather`` (its recursion over containers), with the per-tensor GPU op replaced by ``torch.cat``."""
    monkeypatch.setattr(_functions.Gather, 'apply', staticmethod(lambda device, dim, *tensors: torch.cat(tensors, dim)))
    return lambda outputs: scatter_gather.gather(outputs, target_device='cpu')


@pytest.mark.parametrize('options', [dict(), dict(use_pwca=False), dict(use_glca=False)])
def test_the_replicas_train_outputs_are_gathered_field_by_field(cpu_gather, options):
    torch.manual_seed(0)
    model = DCALViT(make_tiny_vit(), **options).train()
    images = torch.randn(4, 3, 64, 64)
    replicas = [model(images[:2], torch.tensor([1, 0])), model(images[2:], torch.tensor([1, 0]))]
    joined = cpu_gather(replicas)
    assert type(joined) is DCALOutput
    for name in DCALOutput._fields:
        parts = [getattr(out, name) for out in replicas]
        if parts[0] is None:
            assert getattr(joined, name) is None, name
        else:
            assert torch.equal(getattr(joined, name), torch.cat(parts)), name
