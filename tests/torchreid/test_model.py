"""DCALReID: torchreid's train/eval contract, BNNeck per branch, PWCA sharing SA's neck and classifier, retrieval."""
import pytest
import torch
import torch.nn.functional as F

torchreid = pytest.importorskip('torchreid')

from dcal_plugin.core import DCALViT, dcal_vit  # noqa: E402
from dcal_plugin.torchreid import DCALReID, build_dcal_reid  # noqa: E402
from dcal_plugin.torchreid.engine import DCALEngine  # noqa: E402

from .helpers import TINY_MODEL  # noqa: E402

WIDTH = TINY_MODEL['embed_dim']


def tiny_model(num_classes=5, seed=0):
    torch.manual_seed(seed)
    model = build_dcal_reid('deit_tiny_patch16_224', num_classes, img_size=(32, 16), **TINY_MODEL)
    with torch.no_grad():  # non-trivial neck scales and running statistics
        for neck in (model.sa_bnneck, model.glca_bnneck):
            neck.weight.uniform_(0.5, 1.5)
            neck.running_mean.normal_()
            neck.running_var.uniform_(0.5, 2.0)
    return model


def images(batch=4, seed=0):
    return torch.randn(batch, 3, 32, 16, generator=torch.Generator().manual_seed(seed))


def unit(rows):
    """Each row divided by its Euclidean length."""
    return rows / rows.pow(2).sum(1, keepdim=True).sqrt()


@pytest.mark.parametrize('retrieval_norm', ['each', 'concat'])
def test_eval_returns_sa_and_glca_before_their_bnnecks_l2_normalised(retrieval_norm):
    """TransReID's NECK_FEAT 'before' and FEAT_NORM 'yes': each half normalised (default), or the concatenation."""
    model = tiny_model()
    model.retrieval_norm = retrieval_norm
    x = images()
    with torch.no_grad():
        feature = model.eval()(x)
        core = model.dcal(x)
    assert feature.shape == (4, 2 * WIDTH)
    if retrieval_norm == 'each':
        want = torch.cat([unit(core.sa_feature), unit(core.glca_feature)], 1)
    else:
        want = unit(torch.cat([core.sa_feature, core.glca_feature], 1))
    torch.testing.assert_close(feature, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="retrieval_norm must be one of .*'after'"):
        build_dcal_reid('deit_tiny_patch16_224', 5, img_size=(32, 16), retrieval_norm='after', **TINY_MODEL)


def test_the_default_retrieval_feature_is_each_half_normalised():
    assert tiny_model().retrieval_norm == 'each'


def test_pwca_never_runs_in_eval(monkeypatch):
    model = tiny_model().eval()
    x = images()
    with torch.no_grad():
        batched = model(x)
        one = model(x[:1])  # train mode refuses a batch of 1: PWCA needs a partner
    torch.testing.assert_close(one[0], batched[0], rtol=1e-5, atol=1e-5)

    def no_partner(*args):
        raise AssertionError('PWCA partner requested')
    monkeypatch.setattr(dcal_vit, 'pwca_partner', no_partner)
    with torch.no_grad():
        model(x)
    with pytest.raises(AssertionError, match='PWCA partner'):
        model.train()(x, branch_outputs=True)


def test_train_output_feeds_triplet_before_and_ce_after_the_bnneck():
    model = tiny_model().train()
    x, partner = images(), torch.tensor([1, 2, 3, 0])
    torch.manual_seed(1)
    out = model(x, distractor_index=partner, branch_outputs=True)
    torch.manual_seed(1)
    core = model.dcal(x, distractor_index=partner)
    for name in ('sa', 'glca', 'pwca'):
        torch.testing.assert_close(getattr(out, f'{name}_feature'), getattr(core, f'{name}_feature'))

    def batch_norm(neck, feature):
        return neck.weight * (feature - feature.mean(0)) / torch.sqrt(feature.var(0, unbiased=False) + neck.eps)
    torch.testing.assert_close(out.sa_logits, batch_norm(model.sa_bnneck, core.sa_feature)
                               @ model.sa_classifier.weight.T, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.glca_logits, batch_norm(model.glca_bnneck, core.glca_feature)
                               @ model.glca_classifier.weight.T, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.pwca_logits, batch_norm(model.sa_bnneck, core.pwca_feature)
                               @ model.sa_classifier.weight.T, rtol=1e-4, atol=1e-5)


def test_pwca_leaves_the_sa_running_statistics_alone():
    model = tiny_model().train()
    start = model.sa_bnneck.running_mean.clone()
    out = model(images(), branch_outputs=True)
    momentum = model.sa_bnneck.momentum
    want = (1 - momentum) * start + momentum * out.sa_feature.detach().mean(0)
    torch.testing.assert_close(model.sa_bnneck.running_mean, want)


def test_bnneck_shift_stays_zero_through_torchreid_training_steps():
    model = tiny_model()
    assert 'sa_bnneck.bias' in model.state_dict() and 'loss_weighting.log_vars' in model.state_dict()
    names = {name for name, _ in model.named_parameters()}
    assert 'sa_bnneck.bias' not in names and 'loss_weighting.log_vars' in names
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    torchreid.utils.open_all_layers(model)  # what torchreid's engine does at every epoch
    out = model(images(), branch_outputs=True)
    loss = sum(F.cross_entropy(getattr(out, f'{b}_logits'), torch.tensor([0, 0, 1, 1])) for b in ('sa', 'glca', 'pwca'))
    loss.backward()
    missing = [name for name, param in model.named_parameters()
               if name != 'loss_weighting.log_vars' and (param.grad is None or not param.grad.abs().sum() > 0)]
    assert missing == []
    optimizer.step()
    assert torch.count_nonzero(model.sa_bnneck.bias) == 0 and torch.count_nonzero(model.glca_bnneck.bias) == 0


def test_rejects_a_backbone_with_its_own_classifier_and_a_foreign_model_in_the_engine():
    with pytest.raises(ValueError, match='num_classes=0'):
        DCALReID(DCALViT.from_timm('deit_tiny_patch16_224', img_size=32, num_classes=3, **TINY_MODEL), 3)
    with pytest.raises(TypeError, match='DCALReID'):
        DCALEngine(None, torch.nn.Linear(2, 2), None)


def test_eval_retrieval_feature_under_bf16_autocast_is_close_to_float32():
    model = tiny_model().eval()
    with torch.no_grad():
        full = model(images())
        with torch.autocast('cpu', dtype=torch.bfloat16):
            half = model(images())
    assert half.shape == full.shape and torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), full, rtol=0.05, atol=0.05)
