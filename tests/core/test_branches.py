"""GLCA, PWCA and the rollout inside DCALViT against the loop formulas of ``reference.py``."""
import collections

import pytest
import torch
import torch.nn.functional as F

from dcal_plugin.core import DCALViT, UncertaintyWeightedLoss
from dcal_plugin.core import dcal_vit as dcal_vit_module
from dcal_plugin.core.attention import MapRows
from dcal_plugin.core.blocks import global_local_cross_attention_block, self_and_pair_attention_block
from dcal_plugin.core.dcal_model import pwca_partner, random_derangement

from ..conftest import make_tiny_vit
from .reference import cross_attention_block, head_mean_attention, pooled_glca, rollout_full
from .test_attention import read


def images(batch=3, size=64, seed=0):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def sa_tokens_per_block(vit, x):
    """Tokens entering each block and after the last one, by timm's own blocks: list of [B, N, C]."""
    tokens = [vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))]
    for block in vit.blocks:
        tokens.append(block(tokens[-1]))
    return tokens


def test_attention_maps_are_each_blocks_head_mean_of_timms_tokens():
    model = DCALViT(make_tiny_vit())
    x = images(batch=2)
    maps = model.attention_maps(x)
    assert len(maps) == 3 and len(model.attention_maps(x, 2)) == 2
    tokens = sa_tokens_per_block(model.vit, x)
    with torch.no_grad():
        for depth, block in enumerate(model.vit.blocks):
            for b in range(2):
                torch.testing.assert_close(maps[depth][b], head_mean_attention(block, tokens[depth][b]),
                                           rtol=1e-4, atol=1e-6)
    assert not maps[0].requires_grad


def test_rollout_map_is_the_class_row_on_the_patch_grid():
    model = DCALViT(make_tiny_vit()).eval()
    x = images(batch=2)
    heat = model.rollout_map(x)
    assert heat.shape == (2, 4, 4)
    tokens = sa_tokens_per_block(model.vit, x)
    with torch.no_grad():
        for b in range(2):
            maps = [head_mean_attention(block, tokens[depth][b]) for depth, block in enumerate(model.vit.blocks)]
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
            for depth, block in enumerate(model.vit.blocks):
                # I1's PWCA tokens attend over [K1; K2], [V1; V2]: K2, V2 from I2's SA tokens at block l
                y = cross_attention_block(block, y, torch.cat([y, sa[depth][partner[b]]]))
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
        maps = [read(m) for m in maps]
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
        maps = [read(m) for m in maps]
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
    assert options == [dict(rows_sum_to_one=True, num_prefix_tokens=1)]  # softmax maps: the rollout reads each map once


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


def test_default_partner_is_uniform_among_all_permutations_without_fixed_points():
    torch.manual_seed(0)
    for batch in range(2, 10):
        for _ in range(30):
            partner = pwca_partner(batch, None, torch.device('cpu'))
            assert sorted(partner.tolist()) == list(range(batch))
            assert not (partner == torch.arange(batch)).any()
    draws = 44 * 100  # 5 images: 44 derangements, of which rotations of one order reach only 24
    counts = collections.Counter(tuple(pwca_partner(5, None, torch.device('cpu')).tolist()) for _ in range(draws))
    assert len(counts) == 44
    chi_square = sum((count - 100) ** 2 / 100 for count in counts.values())
    assert chi_square < 77.4  # 43 degrees of freedom, p = 0.001


def test_random_derangement_needs_two_elements():
    assert random_derangement(2).tolist() == [1, 0]
    with pytest.raises(ValueError, match='at least 2 elements, got 1'):
        random_derangement(1)


@pytest.mark.parametrize('size', [2, 3, 5])
def test_random_derangement_falls_back_to_a_cyclic_shift_when_every_draw_has_a_fixed_point(monkeypatch, size):
    def increasing_keys(draws, size, **kwargs):  # every draw sorts to the identity, which fixes every point
        return torch.arange(size, dtype=torch.float64).expand(draws, size)

    monkeypatch.setattr(torch, 'rand', increasing_keys)
    assert random_derangement(size).tolist() == [size - 1] + list(range(size - 1))


@pytest.mark.parametrize('partner_gradient', [True, False])
def test_pwca_loss_reaches_the_partners_sa_stream_only_when_asked(partner_gradient):
    model = DCALViT(make_tiny_vit(), pwca_partner_gradient=partner_gradient).train()
    x = images(batch=3).requires_grad_()
    out = model(x, distractor_index=torch.tensor([1, 2, 0]))
    out.pwca_logits[0].sum().backward()  # image 0's PWCA loss; its partner is image 1
    assert x.grad[0].abs().sum() > 0 and x.grad[2].abs().sum() == 0
    assert (x.grad[1].abs().sum() > 0) == partner_gradient
    # the same forward either way: only the gradient differs
    other = DCALViT(make_tiny_vit(), pwca_partner_gradient=not partner_gradient).train()
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(other(x, distractor_index=torch.tensor([1, 2, 0])).pwca_logits, out.pwca_logits)


def test_outputs_fgvc_prediction_and_reid_feature():
    model = DCALViT(make_tiny_vit(), local_query_ratio=0.25).eval()
    x = images(batch=2)
    with torch.no_grad():
        out = model(x)
        timm_feature = model.vit.forward_head(model.vit.forward_features(x), pre_logits=True)
        tokens = sa_tokens_per_block(model.vit, x)[-2]
        glca_feature = torch.stack([pooled_glca(model, tokens[b], out.local_query_index[b])[0] for b in range(2)])
    torch.testing.assert_close(out.fgvc_prediction, (out.sa_logits.softmax(-1) + out.glca_logits.softmax(-1)) / 2)
    assert out.reid_feature.shape == (2, 384)
    torch.testing.assert_close(out.reid_feature[:, :192], timm_feature, rtol=1e-5, atol=1e-5)  # SA: timm's class token
    torch.testing.assert_close(out.reid_feature[:, 192:], glca_feature, rtol=1e-4, atol=1e-4)  # GLCA: pooled R outputs


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
    model = DCALViT(make_tiny_vit(img_size=(64, 32))).eval()
    with pytest.raises(ValueError, match=r'expects images \[B, C, 64, 32\], got \(2, 3, 64, 64\).*img_size=\(64, 64\) '
                                         r'to use this size \(a checkpoint\'s position embeddings are resized '
                                         r'on load\)'):
        model(images(batch=2))


def test_image_size_off_the_patch_grid_is_a_clear_error():
    with pytest.raises(ValueError, match=r'img_size \(450, 450\) does not fit the patch grid.*16x16.*\(448, 448\)'):
        DCALViT.from_timm('deit_tiny_patch16_224', img_size=450, depth=1)
    with pytest.raises(ValueError, match=r'vit_base_r50_s16_224 cuts images into 16x16.*\(240, 128\)'):
        DCALViT.from_timm('vit_base_r50_s16_224', img_size=(250, 128), depth=1)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match=r'ratio must lie in \(0, 1\]'):
        DCALViT(make_tiny_vit(), local_query_ratio=1.2)
    for index in (3, -4):
        with pytest.raises(ValueError, match=rf'glca_block_index must lie in \[-3, 2\], got {index}'):
            DCALViT(make_tiny_vit(), glca_block_index=index)
    assert DCALViT(make_tiny_vit(), glca_block_index=-3).glca_block_index == 0


def test_a_single_class_model_still_returns_logits():
    out = DCALViT(make_tiny_vit(num_classes=1)).eval()(images(batch=2))
    assert out.sa_logits.shape == out.glca_logits.shape == (2, 1)


@pytest.mark.parametrize('grad', [False, True])
def test_block_without_partner_or_weights_is_timms_block_and_returns_no_map(grad):
    vit = make_tiny_vit(img_size=32)  # 5 tokens, fewer than the 6 images
    block = vit.blocks[0]
    x = torch.randn(6, 5, 192, requires_grad=grad)
    with torch.set_grad_enabled(grad):
        out, read_map = self_and_pair_attention_block(block, x)
        want = block(x)
    assert read_map is None
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def with_attention_dropout(model, p):
    for attn in [block.attn for block in model.vit.blocks] + [model.glca_block.attn]:
        attn.attn_drop.p = p
    return model


@pytest.mark.parametrize('train', [False, True])
def test_attention_dropout_reaches_every_branch_in_training_only(train):
    x, partner = images(batch=3), torch.tensor([1, 2, 0])
    plain = DCALViT(make_tiny_vit(), local_query_ratio=0.25).train(train)
    dropped = with_attention_dropout(DCALViT(make_tiny_vit(), local_query_ratio=0.25), 0.3).train(train)
    with torch.no_grad():
        want = plain(x, distractor_index=partner)
        torch.manual_seed(0)
        got = dropped(x, distractor_index=partner)
    for name in ('sa_logits', 'glca_logits', 'pwca_logits'):
        if not train and name == 'pwca_logits':
            continue
        differs = not torch.allclose(getattr(got, name), getattr(want, name), atol=1e-4)
        assert differs == train, name


@pytest.mark.parametrize('map_rows', [None, MapRows.ALL])  # ALL: a rollout block, its map recomputed under autograd
def test_every_attention_of_a_block_drops_its_own_weights_in_training(map_rows):
    """Two draws of attention dropout change SA rows, PWCA rows and GLCA rows of one block; without dropout nothing
    changes."""
    block = make_tiny_vit().blocks[0].train()
    x = torch.randn(4, 17, 192, requires_grad=True)
    partner, query_index = torch.tensor([1, 0]), torch.tensor([[1, 5], [2, 9], [3, 4], [7, 8]])

    def draw(seed):
        torch.manual_seed(seed)
        stacked, _ = self_and_pair_attention_block(block, x, partner, map_rows)
        return stacked[:2], stacked[2:], global_local_cross_attention_block(block, x, query_index)

    for p, changes in ((0.0, False), (0.3, True)):
        block.attn.attn_drop.p = p
        first, second = draw(0), draw(1)
        for name, a, b in zip(('SA', 'PWCA', 'GLCA'), first, second):
            assert (not torch.allclose(a, b)) == changes, (name, p)


def test_partner_gradient_flows_by_default_through_the_block():
    block = make_tiny_vit().blocks[0]
    x = torch.randn(4, 17, 192, requires_grad=True)
    out, _ = self_and_pair_attention_block(block, x, torch.tensor([1, 0]))
    out[2].sum().backward()  # PWCA row of image 0, whose partner is SA row 1
    assert x.grad[1].abs().sum() > 0


@pytest.mark.parametrize('change, message', [
    (lambda vit: setattr(vit, 'fc_norm', torch.nn.LayerNorm(192)), 'fc_norm or attention pooling'),
    (lambda vit: setattr(vit.blocks[1].attn, 'gate', torch.nn.Linear(192, 192)), 'gated attention'),
])
def test_unsupported_backbones_are_clear_errors(change, message):
    vit = make_tiny_vit()
    change(vit)
    with pytest.raises(ValueError, match=message):
        DCALViT(vit)
