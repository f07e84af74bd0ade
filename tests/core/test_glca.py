"""GLCA against the loop formulas of ``reference.py``: its output depends on the patches it selects, and only on
them."""
import pytest
import torch

from dcal_plugin.core import DCALViT, random_local_queries
from dcal_plugin.core import dcal_vit as dcal_vit_module

from ..conftest import make_tiny_vit
from .reference import head_mean_attention, pooled_glca, rollout_full
from .test_branches import images, sa_tokens_per_block


def glca_model(glca_block_index=-1, **kwargs):
    """A tiny DCAL in eval mode whose GLCA block, norm and classifier differ from the SA ones they were copied from."""
    model = DCALViT(make_tiny_vit(), local_query_ratio=0.25, glca_block_index=glca_block_index, **kwargs).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in (model.glca_block, model.glca_norm, model.glca_head):
            for param in module.parameters():
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model


@pytest.mark.parametrize('glca_block_index', [-1, 1, 0])
def test_glca_matches_per_query_loop_with_pooling(glca_block_index):
    model = glca_model(glca_block_index)
    x = images()
    i = model.glca_block_index
    with torch.no_grad():
        out = model(x)
        tokens = sa_tokens_per_block(model.vit, x)
        for b in range(x.shape[0]):
            maps = [head_mean_attention(model.vit.blocks[depth], tokens[depth][b]) for depth in range(i + 1)]
            selected = rollout_full(maps)[0, 1:].argsort(descending=True)[:4]
            assert sorted(out.local_query_index[b].tolist()) == sorted(selected.tolist())
            feature, logits = pooled_glca(model, tokens[i][b], selected)
            torch.testing.assert_close(out.glca_feature[b], feature, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(out.glca_logits[b], logits, rtol=1e-4, atol=1e-4)


def forced_selection(monkeypatch, index):
    """Make the model's rollout selection return ``index [B, R]``."""
    monkeypatch.setattr(dcal_vit_module, 'select_local_queries', lambda scores, ratio: index)


def test_glca_logits_follow_the_selected_patches(monkeypatch):
    model = glca_model()
    x = images(batch=2)
    tokens = sa_tokens_per_block(model.vit, x)[-2]
    logits = []
    for index in (torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]), torch.tensor([[8, 9, 10, 11], [12, 13, 14, 15]])):
        forced_selection(monkeypatch, index)
        with torch.no_grad():
            out = model(x)
            for b in range(2):
                torch.testing.assert_close(out.glca_logits[b], pooled_glca(model, tokens[b], index[b])[1],
                                           rtol=1e-4, atol=1e-4)
        logits.append(out.glca_logits)
    assert (logits[0] - logits[1]).abs().max() > 1e-2


def test_glca_ignores_the_queries_of_unselected_tokens():
    """Change the query weights only along a direction orthogonal to the selected tokens' normed inputs.

    Then the selected tokens' queries stay the same while every other token's query changes:
    GLCA's logits must not move. The same change made along a selected token moves them.
    """
    model = glca_model()
    x = images(batch=1)
    with torch.no_grad():
        before = model(x)
        selected = before.local_query_index[0] + 1
        normed = model.glca_block.norm1(sa_tokens_per_block(model.vit, x)[-2][0])
        basis = torch.linalg.qr(normed[selected].T).Q  # [C, R]: span of the selected queries' inputs
        generator = torch.Generator().manual_seed(2)
        direction = torch.randn(normed.shape[-1], generator=generator)
        direction = direction - basis @ (basis.T @ direction)
        unselected = [t for t in range(normed.shape[0]) if t not in selected.tolist()]
        assert (normed[unselected] @ direction).abs().min() > 1e-3  # every other query does change
        width = model.vit.embed_dim
        change = torch.randn(width, generator=generator)[:, None] * direction[None]
        weight = model.glca_block.attn.qkv.weight
        weight[:width] += change
        after = model(x)
        weight[:width] += torch.randn(width, generator=generator)[:, None] * normed[selected[0]][None]
        moved = model(x)
    assert torch.equal(after.local_query_index, before.local_query_index)
    torch.testing.assert_close(after.glca_logits, before.glca_logits, rtol=1e-5, atol=1e-5)
    assert (moved.glca_logits - before.glca_logits).abs().max() > 1e-2


def test_random_queries_change_glca_and_use_the_drawn_patches():
    model = glca_model()
    x = images(batch=2)
    tokens = sa_tokens_per_block(model.vit, x)[-2]
    with torch.no_grad():
        rollout = model(x)
        model.query_selection = 'random'
        torch.manual_seed(0)
        drawn = [model(x) for _ in range(2)]
    assert not torch.equal(drawn[0].local_query_index, drawn[1].local_query_index)
    assert (drawn[0].glca_logits - rollout.glca_logits).abs().max() > 1e-2
    torch.testing.assert_close(drawn[0].sa_logits, rollout.sa_logits)
    for out in drawn:
        for b in range(2):
            torch.testing.assert_close(out.glca_logits[b], pooled_glca(model, tokens[b], out.local_query_index[b])[1],
                                       rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('train', [False, True])
def test_random_queries_compute_no_rollout_and_no_map(monkeypatch, train):
    def refused(*args, **kwargs):
        raise AssertionError('the rollout ran with random queries')

    asked, block_function = [], dcal_vit_module.self_and_pair_attention_block

    def recording(*args, **kwargs):
        asked.append(kwargs['map_rows'])
        return block_function(*args, **kwargs)

    monkeypatch.setattr(dcal_vit_module, 'class_token_rollout', refused)
    monkeypatch.setattr(dcal_vit_module, 'self_and_pair_attention_block', recording)
    model = DCALViT(make_tiny_vit(), query_selection='random').train(train)
    out = model(images(batch=2))
    assert out.local_query_index.shape == (2, 2) and out.glca_logits.shape == (2, 5)
    assert asked == [None] * 3


def test_random_queries_draw_from_every_patch():
    model = DCALViT(make_tiny_vit(), query_selection='random', local_query_ratio=1.0).eval()
    with torch.no_grad():
        index = model(images(batch=2)).local_query_index
    assert torch.equal(index.sort(dim=1).values, torch.arange(16).expand(2, 16))


def test_query_selection_reaches_from_timm_and_is_checked():
    model = DCALViT.from_timm('deit_tiny_patch16_224', img_size=32, depth=2, query_selection='random',
                              pwca_partner_gradient=False)
    assert model.query_selection == 'random' and model.pwca_partner_gradient is False
    assert len(model.vit.blocks) == 2 and model.vit.num_classes == 0
    assert isinstance(model.vit.blocks[-1].drop_path1, torch.nn.Identity)  # drop_path_rate 0 unless asked
    default = DCALViT(make_tiny_vit())
    assert (default.query_selection, default.pwca_partner_gradient) == ('rollout', True)
    with pytest.raises(ValueError, match="query_selection must be one of \\('rollout', 'random'\\)"):
        DCALViT(make_tiny_vit(), query_selection='top')


def test_random_local_queries_are_distinct_and_uniform():
    torch.manual_seed(0)
    index = random_local_queries(4000, 16, 0.25, torch.device('cpu'))
    assert index.shape == (4000, 4)
    assert all(len(set(row)) == 4 for row in index.tolist())
    counts = torch.bincount(index.flatten(), minlength=16).float()
    expected = 4000 * 4 / 16
    assert ((counts - expected) ** 2 / expected).sum() < 37.7  # chi-square, 15 degrees of freedom, p = 0.001


def test_glca_starts_as_a_copy_of_sa_with_weights_of_its_own():
    model = DCALViT(make_tiny_vit())
    for glca, sa in ((model.glca_block, model.vit.blocks[-1]), (model.glca_norm, model.vit.norm),
                     (model.glca_head, model.vit.head)):
        for (name, mine), theirs in zip(glca.named_parameters(), sa.parameters()):
            assert torch.equal(mine, theirs) and mine.data_ptr() != theirs.data_ptr(), name
