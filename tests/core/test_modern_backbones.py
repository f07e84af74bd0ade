"""DCAL on the ViTs researchers start from today (beyond the paper): DINOv2 with and without registers, CLIP ViT-B/16,
distilled DeiT; prefix tokens take part in attention and the rollout but are never GLCA's queries; any input size."""
import pytest
import torch

from dcal_plugin.core import DCALViT, num_local_queries
from dcal_plugin.core.blocks import global_local_cross_attention_block

from .reference import batched_rollout_full

# name -> (image size: a 4x4 grid, prefix tokens)
FAMILIES = {
    'dinov2 with registers': ('vit_small_patch14_reg4_dinov2', 56, 5),
    'dinov2': ('vit_small_patch14_dinov2', 56, 1),
    'clip': ('vit_base_patch16_clip_224', 64, 1),
    'distilled deit': ('deit_tiny_distilled_patch16_224', 64, 2),
}
TIMM_BOUND = 1e-4  # float32, 2 blocks: the SA branch is timm's own computation


def build(name, size, **kwargs):
    torch.manual_seed(0)
    model = DCALViT.from_timm(name, img_size=size, num_classes=5, depth=2, local_query_ratio=0.25, **kwargs)
    with torch.no_grad():  # registers and the distillation token as trained models have them, not zeros
        for token in (model.vit.reg_token, getattr(model.vit, 'dist_token', None)):
            if token is not None:
                token.normal_(std=1.0)
    return model.eval()


def images(size, batch=2, seed=1):
    return torch.randn(batch, 3, *((size, size) if isinstance(size, int) else size),
                       generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('family', FAMILIES.values(), ids=FAMILIES.keys())
def test_sa_equals_timms_own_forward(family):
    name, size, prefix = family
    model = build(name, size)
    assert model.num_prefix_tokens == prefix
    x = images(size)
    with torch.no_grad():
        want, out = model.vit(x), model(x)
    assert (out.sa_logits - want).abs().max() < TIMM_BOUND
    assert out.glca_logits.shape == want.shape


@pytest.mark.parametrize('family', FAMILIES.values(), ids=FAMILIES.keys())
def test_glca_takes_the_top_patches_of_the_rollout_and_never_a_prefix_token(family):
    name, size, prefix = family
    model = build(name, size)
    x = images(size)
    with torch.no_grad():
        out = model(x)
        maps = model.attention_maps(x)  # every block's [B, N, N] map, prefix tokens included
        class_row = batched_rollout_full(maps, model.residual_weight)[:, 0]  # [B, N]: the class token's rollout
        count = num_local_queries(16, model.local_query_ratio)
        expected = class_row[:, prefix:].topk(count, dim=-1).indices  # patches only
        tokens = model._embed(x)
        for block in model.vit.blocks[:model.glca_block_index]:
            tokens = block(tokens)
        glca = global_local_cross_attention_block(model.glca_block, tokens, expected + prefix)
        feature = model.glca_norm(glca.mean(dim=1))
    assert torch.equal(out.local_query_index.sort().values, expected.sort().values)
    assert out.local_query_index.max() < 16
    assert (out.glca_feature - feature).abs().max() < TIMM_BOUND
    if prefix > 1:  # the rollout reaches the other prefix tokens too: it is their selection that is excluded
        assert class_row[:, 1:prefix].sum() > 0


@pytest.mark.parametrize('family', FAMILIES.values(), ids=FAMILIES.keys())
def test_one_model_serves_any_input_size_as_timm_does(family):
    name, size, prefix = family
    model = build(name, size, dynamic_img_size=True)
    stride = size // 4
    for height, width in ((size, size), (size + 2 * stride, size - stride)):
        x = images((height, width))
        with torch.no_grad():
            want, out = model.vit(x), model(x)
            heat = model.rollout_map(x)
        grid = (height // stride, width // stride)
        assert (out.sa_logits - want).abs().max() < TIMM_BOUND
        assert out.local_query_index.shape == (2, num_local_queries(grid[0] * grid[1], model.local_query_ratio))
        assert heat.shape == (2, *grid)
    with pytest.raises(ValueError, match=f'multiples of {stride}x{stride} patches'):
        model(images((size + 1, size)))


def test_a_fixed_size_model_names_the_switch_for_any_size():
    model = build('vit_small_patch14_reg4_dinov2', 56)
    with pytest.raises(ValueError, match='dynamic_img_size=True to take any size'):
        model(images(70))


@pytest.mark.parametrize('family', FAMILIES.values(), ids=FAMILIES.keys())
def test_all_branches_train_and_every_prefix_token_learns(family):
    name, size, _ = family
    model = build(name, size).train()
    out = model(images(size, batch=4))
    loss = sum(logits.logsumexp(-1).mean() for logits in (out.sa_logits, out.glca_logits, out.pwca_logits))
    loss.backward()
    assert torch.isfinite(loss)
    for token in (model.vit.cls_token, model.vit.reg_token, getattr(model.vit, 'dist_token', None)):
        if token is not None:
            assert token.grad.abs().sum() > 0
