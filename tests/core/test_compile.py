"""``torch.compile`` on the core: no graph breaks in the train and eval forwards; inductor matches eager."""
import pytest
import torch
import torch.nn.functional as F

from dcal_plugin.core import DCALViT, UncertaintyWeightedLoss

from ..conftest import make_tiny_vit

pytestmark = pytest.mark.slow  # torch.compile (inductor) builds kernels


def graph_breaks(model, images):
    torch._dynamo.reset()
    return torch._dynamo.explain(model)(images)


@pytest.mark.parametrize('train', [False, True])
@pytest.mark.parametrize('options', [dict(), dict(query_selection='random'), dict(grad_checkpointing=True)])
def test_the_train_and_eval_forwards_compile_without_graph_breaks(train, options):
    model = DCALViT(make_tiny_vit(), **options).train(train)
    with torch.set_grad_enabled(train):
        explanation = graph_breaks(model, torch.randn(2, 3, 64, 64))
    assert explanation.graph_break_count == 0, [str(reason) for reason in explanation.break_reasons]
    assert explanation.graph_count == 1


def step(model, images, labels):
    out = model(images, torch.tensor([1, 2, 3, 0]))  # compiled random draws differ from eager ones
    losses = [F.cross_entropy(logits, labels) for logits in (out.sa_logits, out.glca_logits, out.pwca_logits)]
    UncertaintyWeightedLoss()(losses).backward()
    return out


def test_inductor_on_cpu_matches_eager_in_outputs_and_gradients():
    eager = DCALViT(make_tiny_vit(depth=2)).train()
    compiled = DCALViT(make_tiny_vit(depth=2)).train()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile(backend='inductor')
    images, labels = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0)), torch.arange(4)
    outputs = [step(model, images, labels) for model in (eager, compiled)]
    for name in ('sa_logits', 'glca_logits', 'pwca_logits'):
        torch.testing.assert_close(getattr(outputs[1], name), getattr(outputs[0], name), rtol=1e-4, atol=1e-4, msg=name)
    assert torch.equal(outputs[1].local_query_index, outputs[0].local_query_index)
    gradients = dict(eager.named_parameters())
    for name, parameter in compiled.named_parameters():
        torch.testing.assert_close(parameter.grad, gradients[name].grad, rtol=1e-3, atol=1e-5, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(compiled.eval()(images).glca_logits, eager.eval()(images).glca_logits,
                                   rtol=1e-4, atol=1e-4)
