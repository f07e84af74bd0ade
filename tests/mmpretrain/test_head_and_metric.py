"""DCALClsHead and DCALBranchAccuracy against direct formulas."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import dcal_plugin.mmpretrain  # noqa: F401  (registers the modules)
from dcal_plugin.mmpretrain import DCALBranchAccuracy


def head(**kwargs):
    return MODELS.build(dict(type='DCALClsHead', num_classes=5, in_channels=8, **kwargs))


def samples(labels):
    return [DataSample().set_gt_label(label) for label in labels]


def features(batch=4, branches=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, 8, generator=g) for _ in range(branches))


def test_loss_is_the_uncertainty_weighted_sum_of_branch_cross_entropies():
    model = head()
    with torch.no_grad():
        model.loss_weighting.log_vars.copy_(torch.tensor([0.2, -0.4, 0.9]))
    feats, labels = features(), [0, 3, 1, 4]
    losses = model.loss(feats, samples(labels))
    target = torch.tensor(labels)
    ce = [F.cross_entropy(model.sa_fc(feats[0]), target), F.cross_entropy(model.glca_fc(feats[1]), target),
          F.cross_entropy(model.sa_fc(feats[2]), target)]  # PWCA shares SA's classifier
    for name, w, value in zip(('sa', 'glca', 'pwca'), (0.2, -0.4, 0.9), ce):
        assert losses[f'loss_{name}'].item() == pytest.approx(0.5 * (math.exp(-w) * value.item() + w), rel=1e-5)
        assert losses[f'ce_{name}'].item() == pytest.approx(value.item(), rel=1e-5)
        assert losses[f'weight_{name}'].item() == pytest.approx(math.exp(-w), rel=1e-5)
    summed = sum(v for k, v in losses.items() if 'loss' in k)  # what mmengine's parse_losses optimises
    summed.backward()
    assert model.loss_weighting.log_vars.grad.abs().min() > 0
    assert not any(v.requires_grad for k, v in losses.items() if 'loss' not in k)


def test_label_smoothing_loss_config_is_used():
    model = head(loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1))
    feats, target = features(), torch.tensor([0, 1, 2, 3])
    log_p = model.sa_fc(feats[0]).log_softmax(-1)
    smoothed = 0.9 * F.one_hot(target, 5) + 0.1 / 5  # mmpretrain's 'original' mode
    torch.testing.assert_close(model.loss(feats, samples(target.tolist()))['ce_sa'], -(smoothed * log_p).sum(-1).mean())


def test_predict_fuses_sa_and_glca_probabilities():
    model = head()
    feats = features(branches=2)
    predicted = model.predict(feats, samples([0, 1, 2, 3]))
    sa, glca = model.sa_fc(feats[0]).softmax(-1), model.glca_fc(feats[1]).softmax(-1)
    for index, sample in enumerate(predicted):
        torch.testing.assert_close(sample.pred_score, (sa[index] + glca[index]) / 2)
        assert sample.pred_label.item() == (sa[index] + glca[index]).argmax().item()
        torch.testing.assert_close(sample.sa_score, sa[index])
        torch.testing.assert_close(sample.glca_score, glca[index])


def test_predict_with_sa_only_and_loss_needs_three_branch_entries():
    model = head()
    sa = features(batch=1, branches=1)[0]
    [sample] = model.predict((sa, None))  # eval features with GLCA skipped (SA-only inference)
    torch.testing.assert_close(sample.pred_score, model.sa_fc(sa)[0].softmax(-1))
    assert 'glca_score' not in sample
    with pytest.raises(ValueError, match='branch features'):
        model.loss(features(branches=2), samples([0, 1, 2, 3]))


def test_loss_without_a_switched_off_branch_weights_the_others_only():
    model = head(use_glca=False)
    with torch.no_grad():
        model.loss_weighting.log_vars.copy_(torch.tensor([0.2, -0.4, 0.9]))
    sa, _, pwca = features()
    target = torch.tensor([0, 1, 2, 3])
    losses = model.loss((sa, None, pwca), samples(target.tolist()))
    assert set(losses) == {'loss_sa', 'loss_pwca', 'ce_sa', 'ce_pwca', 'weight_sa', 'weight_pwca'}
    for name, feature, log_var in (('sa', sa, 0.2), ('pwca', pwca, 0.9)):
        ce = F.cross_entropy(model.sa_fc(feature), target)
        torch.testing.assert_close(losses[f'loss_{name}'], 0.5 * (math.exp(-log_var) * ce + log_var))
    (losses['loss_sa'] + losses['loss_pwca']).backward()
    assert model.loss_weighting.log_vars.grad[1] == 0 and model.glca_fc is None


@pytest.mark.parametrize('use_glca, glca_feature', [(True, False), (False, True)])
def test_loss_refuses_a_glca_feature_the_head_was_not_built_for(use_glca, glca_feature):
    sa, glca, pwca = features()
    with pytest.raises(ValueError, match=f"built with use_glca={use_glca}: build the model as type='DCALClassifier'"):
        head(use_glca=use_glca).loss((sa, glca if glca_feature else None, pwca), samples([0, 1, 2, 3]))


def test_branch_accuracy_matches_a_direct_count():
    metric = DCALBranchAccuracy()
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 4, (20,), generator=g)
    sa, glca = torch.rand(20, 4, generator=g), torch.rand(20, 4, generator=g)
    fused = (sa + glca) / 2
    batch = []
    for i in range(20):
        sample = DataSample().set_gt_label(labels[i]).set_pred_score(fused[i])
        sample.set_field(sa[i], 'sa_score')
        sample.set_field(glca[i], 'glca_score')
        batch.append(sample.to_dict())
    metric.process(None, batch)
    result = metric.evaluate(20)
    for name, scores in (('sa', sa), ('glca', glca), ('fused', fused)):
        want = 100.0 * sum(int(scores[i].argmax() == labels[i]) for i in range(20)) / 20
        assert result[f'dcal/{name}_top1'] == pytest.approx(want)
