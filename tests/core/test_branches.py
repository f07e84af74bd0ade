"""GLCA, PWCA and the rollout inside DCALViT against the loop formulas of ``reference.py``."""
import pytest
import torch
import torch.nn.functional as F

from dcal_plugin.core import DCALViT, UncertaintyWeightedLoss
from dcal_plugin.core import dcal_vit as dcal_vit_module

from ..conftest import make_tiny_vit
from .reference import cross_attention_block, head_mean_attention, rollout_full


def images(batch=3, size=64, seed=0):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def sa_tokens_per_block(vit, x):
    """Tokens entering each block and after the last one, by timm's own blocks: list of [B, N, C]."""
    tokens = [vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))]
    for block in vit.blocks:
        tokens.append(block(tokens[-1]))
    return tokens


@pytest.mark.parametrize('glca_block_index', [-1, 1])
def test_glca_matches_per_query_loop(glca_block_index):
    model = DCALViT(make_tiny_vit(), local_query_ratio=0.25, glca_block_index=glca_block_index).eval()
    with torch.no_grad():  # make GLCA's weights differ from the SA block it was copied from
        for param in model.glca_block.parameters():
            param.add_(0.05 * torch.randn_like(param))
    x = images()
    i = model.glca_block_index
    with torch.no_grad():
        out = model(x)
        tokens = sa_tokens_per_block(model.vit, x)
        for b in range(x.shape[0]):
            maps = [head_mean_attention(model.vit.blocks[l], tokens[l][b]) for l in range(i + 1)]
            scores = rollout_full(maps)[0, 1:]
            selected = scores.argsort(descending=True)[:4]
            assert sorted(out.local_query_index[b].tolist()) == sorted(selected.tolist())
            queries = tokens[i][b][torch.cat([torch.tensor([0]), selected + 1])]
            glca_out = cross_attention_block(model.glca_block, queries, tokens[i][b])
            feature = model.glca_norm(glca_out)[0]
            torch.testing.assert_close(out.glca_feature[b], feature, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(out.glca_logits[b], model.glca_head(feature), rtol=1e-4, atol=1e-4)


def test_attention_maps_are_each_blocks_head_mean_of_timms_tokens():
    model = DCALViT(make_tiny_vit())
    x = images(batch=2)
    maps = model.attention_maps(x)
    assert len(maps) == 3 and len(model.attention_maps(x, 2)) == 2
    tokens = sa_tokens_per_block(model.vit, x)
    with torch.no_grad():
        for l, block in enumerate(model.vit.blocks):
            for b in range(2):
                torch.testing.assert_close(maps[l][b], head_mean_attention(block, tokens[l][b]), rtol=1e-4, atol=1e-6)
    assert not maps[0].requires_grad


def test_rollout_map_is_the_class_row_on_the_patch_grid():
    model = DCALViT(make_tiny_vit()).eval()
    x = images(batch=2)
    heat = model.rollout_map(x)
    assert heat.shape == (2, 4, 4)
    tokens = sa_tokens_per_block(model.vit, x)
    with torch.no_grad():
        for b in range(2):
            maps = [head_mean_attention(block, tokens[l][b]) for l, block in enumerate(model.vit.blocks)]
            want = rollout_full(maps)[0, 1:].reshape(4, 4).float()
            torch.testing.assert_close(heat[b], want, rtol=1e-4, atol=1e-6)


def test_pwca_matches_explicit_concatenation_formula():
    model = DCALViT(make_tiny_vit()).train()
    x = images(batch=3)
    partner = torch.tensor([2, 0, 1])
    with torch.no_grad():
        out = model(x, distractor_index=partner)
        sa = sa_tokens_per_block(model.vit, x)
        for b in range(3):
            y = sa[0][b]
            for l, block in enumerate(model.vit.blocks):
                # I1's PWCA tokens attend over [K1; K2], [V1; V2]: K2, V2 from I2's SA tokens at block l
                y = cross_attention_block(block, y, torch.cat([y, sa[l][partner[b]]]))
            feature = model.vit.norm(y)[0]
            torch.testing.assert_close(out.pwca_feature[b], feature, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(out.pwca_logits[b], model.vit.head(feature), rtol=1e-4, atol=1e-4)
        # SA keeps timm's math in train mode too (no dropout / drop-path here)
        torch.testing.assert_close(out.sa_logits, model.vit.forward_head(model.vit.norm(sa[-1])), rtol=1e-5, atol=1e-5)


def test_pwca_with_a_partner_differs_from_a_plain_sa_pass():
    model = DCALViT(make_tiny_vit()).train()
    out = model(images(batch=2), distractor_index=torch.tensor([1, 0]))
    assert (out.pwca_logits - out.sa_logits).abs().max() > 1e-3


def test_gradients_reach_every_branch_and_the_loss_weights():
    model = DCALViT(make_tiny_vit()).train()
    criterion = UncertaintyWeightedLoss()
    x, labels = images(batch=4), torch.tensor([0, 1, 2, 3])
    out = model(x)
    losses = [F.cross_entropy(logits, labels) for logits in (out.sa_logits, out.glca_logits, out.pwca_logits)]
    criterion(losses).backward()
    for name, param in list(model.named_parameters()) + [('log_vars', criterion.log_vars)]:
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    # each branch on its own reaches the parameters it uses
    for loss_index, reached, untouched in ((1, 'glca_block.attn.qkv.weight', 'vit.head.weight'),
                                           (2, 'vit.blocks.2.attn.qkv.weight', 'glca_head.weight')):
        model.zero_grad()
        out = model(x)
        F.cross_entropy((out.sa_logits, out.glca_logits, out.pwca_logits)[loss_index], labels).backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        assert grads[reached] is not None and grads[reached].abs().sum() > 0
        assert grads[untouched] is None or grads[untouched].abs().sum() == 0


def test_no_gradient_flows_through_the_selection(monkeypatch):
    seen = []
    original = dcal_vit_module.class_token_rollout

    def recording(maps, residual_weight, **kwargs):
        seen.extend(m.requires_grad for m in maps)
        scores = original(maps, residual_weight, **kwargs)
        seen.append(scores.requires_grad)
        return scores

    monkeypatch.setattr(dcal_vit_module, 'class_token_rollout', recording)
    model = DCALViT(make_tiny_vit()).train()
    out = model(images(batch=2))
    assert out.glca_logits.requires_grad
    assert seen == [False] * 4  # three maps and the scores


@pytest.mark.parametrize('train', [False, True])
@pytest.mark.parametrize('glca_block_index', [-1, 1])
def test_rollout_gets_only_the_class_row_of_the_glca_blocks_map(monkeypatch, train, glca_block_index):
    shapes, options = [], []
    original = dcal_vit_module.class_token_rollout

    def recording(maps, residual_weight, **kwargs):
        maps = [m for m in maps]
        shapes.extend(tuple(m.shape) for m in maps)
        options.append(kwargs)
        return original(maps, residual_weight, **kwargs)

    monkeypatch.setattr(dcal_vit_module, 'class_token_rollout', recording)
    model = DCALViT(make_tiny_vit(), glca_block_index=glca_block_index).train(train)
    with torch.set_grad_enabled(train):
        model(images(batch=2))
    tokens = model.vit.patch_embed.num_patches + 1
    full_maps = model.glca_block_index  # blocks before GLCA's give whole maps
    assert shapes == [(2, tokens, tokens)] * full_maps + [(2, 1, tokens)]
    assert options == [dict(rows_sum_to_one=True)]  # softmax maps: the rollout reads each map once


def test_eval_mode_never_runs_pwca(monkeypatch):
    partners = []
    original = dcal_vit_module.self_and_pair_attention_block

    def recording(block, stream, partner=None, **kwargs):
        partners.append(partner)
        return original(block, stream, partner, **kwargs)

    monkeypatch.setattr(dcal_vit_module, 'self_and_pair_attention_block', recording)
    model = DCALViT(make_tiny_vit()).eval()
    out = model(images(batch=2), distractor_index=torch.tensor([1, 0]))
    assert out.pwca_feature is None and out.pwca_logits is None
    assert partners == [None, None, None]


def test_default_partner_is_a_permutation_without_fixed_points():
    torch.manual_seed(0)
    for batch in range(2, 10):
        for _ in range(30):
            partner = DCALViT._partner(batch, None, torch.device('cpu'))
            assert sorted(partner.tolist()) == list(range(batch))
            assert not (partner == torch.arange(batch)).any()


def test_outputs_fgvc_prediction_and_reid_feature():
    model = DCALViT(make_tiny_vit()).eval()
    with torch.no_grad():
        out = model(images(batch=2))
    torch.testing.assert_close(out.fgvc_prediction, out.sa_logits.softmax(-1) + out.glca_logits.softmax(-1))
    assert out.reid_feature.shape == (2, 384)
    torch.testing.assert_close(out.reid_feature[:, 192:], out.glca_feature)


def test_sa_only_inference_is_timm_and_skips_glca():
    model = DCALViT(make_tiny_vit(), sa_only_inference=True).eval()
    x = images(batch=2)
    with torch.no_grad():
        out = model(x)
        want = model.vit(x)
    torch.testing.assert_close(out.sa_logits, want)
    assert out.glca_logits is None and out.local_query_index is None
    torch.testing.assert_close(out.fgvc_prediction, want.softmax(-1))


def test_headless_model_returns_features_only():
    model = DCALViT(make_tiny_vit(num_classes=0)).train()
    out = model(images(batch=2))
    assert out.sa_logits is None and out.glca_logits is None and out.pwca_logits is None
    assert out.sa_feature.shape == out.glca_feature.shape == out.pwca_feature.shape == (2, 192)
    with pytest.raises(ValueError, match='num_classes=0'):
        out.fgvc_prediction


@pytest.mark.parametrize('partner,message', [
    (torch.tensor([1, 0, 0]), r'LongTensor \[2\]'),
    (torch.tensor([1.0, 0.0]), r'LongTensor \[2\]'),
    (torch.tensor([1, 2]), r'lie in \[0, 1\]'),
    (torch.tensor([0, 1]), 'with itself'),
])
def test_bad_distractor_index(partner, message):
    model = DCALViT(make_tiny_vit()).train()
    with pytest.raises(ValueError, match=message):
        model(images(batch=2), distractor_index=partner)


def test_train_mode_batch_of_one_is_a_clear_error():
    model = DCALViT(make_tiny_vit()).train()
    with pytest.raises(ValueError, match='batch of at least 2'):
        model(images(batch=1))
    model.eval()
    assert model(images(batch=1)).sa_logits.shape == (1, 5)


def test_wrong_input_size_is_a_clear_error():
    model = DCALViT(make_tiny_vit()).eval()
    with pytest.raises(ValueError, match=r'expects images \[B, C, 64, 64\].*img_size=\(96, 96\)'):
        model(images(size=96))


def test_image_size_off_the_patch_grid_is_a_clear_error():
    with pytest.raises(ValueError, match=r'img_size \(450, 450\) does not fit the patch grid.*16x16.*\(448, 448\)'):
        DCALViT.from_timm('deit_tiny_patch16_224', img_size=450, depth=1)
    with pytest.raises(ValueError, match=r'vit_base_r50_s16_224 cuts images into 16x16.*\(240, 128\)'):
        DCALViT.from_timm('vit_base_r50_s16_224', img_size=(250, 128), depth=1)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match=r'ratio must lie in \(0, 1\]'):
        DCALViT(make_tiny_vit(), local_query_ratio=1.2)
    with pytest.raises(ValueError, match='glca_block_index'):
        DCALViT(make_tiny_vit(), glca_block_index=3)
