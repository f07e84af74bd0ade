"""DCAL on CaiT (the supplementary's CaiT-XS24 row): SA is timm's CaiT; PWCA, the rollout and GLCA against
references written here, per image, from the timm modules' weights (einsum over heads, no code of dcal_cait)."""
import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from torch import nn

from dcal_plugin.core import dcal_cait, num_local_queries
from dcal_plugin.core.dcal_cait import DCALCaiT
from dcal_plugin.core.families import dcal_from_timm

NAME = 'cait_xs24_384'
ARCH = dict(depth=2, embed_dim=48, num_heads=3)  # 2 talking-heads blocks, CaiT's 2 class-attention blocks
SIZE, PATCHES, RATIO = 64, 16, 0.25  # a 4x4 patch grid; R = 4
BOUND = 1e-4


def make_vit(size=SIZE, seed=0, **kwargs):
    """A tiny timm CaiT whose weights give peaked attention, mixing heads, and non-zero biases and layer scales.

    timm's initialisation (std 0.02, zero biases, layer scale 1e-4) makes every attention nearly
    uniform and ``proj_w`` nearly 0: most mistakes would not show.
    """
    torch.manual_seed(seed)
    vit = timm.create_model(NAME, img_size=size, init_values=0.5, **{**ARCH, 'num_classes': 5, **kwargs})
    with torch.no_grad():
        for module in vit.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, 1.5 * module.in_features ** -0.5)
                module.bias.normal_(0.0, 0.1)
        vit.pos_embed.normal_(0.0, 1.0)
        vit.cls_token.normal_(0.0, 1.0)
    return vit


def build(size=SIZE, seed=0, vit_kwargs=None, **options):
    return DCALCaiT(make_vit(size, seed, **(vit_kwargs or {})), **{'local_query_ratio': RATIO, **options})


def images(batch=2, size=SIZE, seed=1):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---- references: one image at a time, heads by einsum, weights read from the timm modules ----

def heads(tokens, weight, bias, num_heads):
    """``tokens [M, C]`` through a linear map -> ``[M, H, D]``."""
    return (tokens @ weight.T + bias).reshape(tokens.shape[0], num_heads, -1)


def talking_heads_probs(attn, normed_queries, normed_keys):
    """Softmax of ``proj_l``-mixed logits ``[H, Nq, Nk]`` and the values ``[Nk, H, D]``."""
    width, num_heads = normed_queries.shape[-1], attn.num_heads
    w, b = attn.qkv.weight, attn.qkv.bias
    q = heads(normed_queries, w[:width], b[:width], num_heads)
    k = heads(normed_keys, w[width:2 * width], b[width:2 * width], num_heads)
    v = heads(normed_keys, w[2 * width:], b[2 * width:], num_heads)
    logits = torch.einsum('nhd,mhd->hnm', q, k) * q.shape[-1] ** -0.5
    mixed = torch.einsum('gh,hnm->gnm', attn.proj_l.weight, logits) + attn.proj_l.bias[:, None, None]
    return mixed.softmax(dim=-1), v


def talking_heads_ref(block, tokens, partner_tokens=None):
    """One talking-heads block on one image's patches ``[P, C]``, keys/values extended by ``partner_tokens``."""
    normed = block.norm1(tokens)
    keys = normed if partner_tokens is None else torch.cat([normed, block.norm1(partner_tokens)])
    probs, v = talking_heads_probs(block.attn, normed, keys)
    bias_scale = tokens.shape[0] / keys.shape[0]  # PWCA: proj_w's bias over 2P keys carries its mass over P
    weights = (torch.einsum('gh,hnm->gnm', block.attn.proj_w.weight, probs)
               + bias_scale * block.attn.proj_w.bias[:, None, None])
    out = block.attn.proj(torch.einsum('hnm,mhd->nhd', weights, v).reshape(tokens.shape))
    y = tokens + block.gamma_1 * out
    return y + block.gamma_2 * block.mlp(block.norm2(y))


def class_attention_probs(attn, normed_queries, normed_keys):
    """Softmax ``[H, Nq, Nk]`` of a ``ClassAttn`` and its values ``[Nk, H, D]``."""
    q = heads(normed_queries, attn.q.weight, attn.q.bias, attn.num_heads)
    k = heads(normed_keys, attn.k.weight, attn.k.bias, attn.num_heads)
    v = heads(normed_keys, attn.v.weight, attn.v.bias, attn.num_heads)
    return (torch.einsum('nhd,mhd->hnm', q, k) * q.shape[-1] ** -0.5).softmax(dim=-1), v


def class_attention_ref(block, queries, keys):
    """One class-attention block: tokens ``queries [Nq, C]`` over ``keys [M, C]`` (raw tokens; normed here)."""
    probs, v = class_attention_probs(block.attn, block.norm1(queries), block.norm1(keys))
    y = queries + block.gamma_1 * block.attn.proj(torch.einsum('hnm,mhd->nhd', probs, v).reshape(queries.shape))
    return y + block.gamma_2 * block.mlp(block.norm2(y))


def sa_streams(vit, x):
    """timm's own SA: the patches entering each talking-heads block, the final patches, the class token entering each
    class-attention block (``[B, 1, C]``) and the final one."""
    patches, patch_inputs = vit.pos_drop(vit.patch_embed(x) + vit.pos_embed), []
    for block in vit.blocks:
        patch_inputs.append(patches)
        patches = block(patches)
    class_token, class_inputs = vit.cls_token.expand(x.shape[0], -1, -1), []
    for block in vit.blocks_token_only:
        class_inputs.append(class_token)
        class_token = block(patches, class_token)
    return patch_inputs, patches, class_inputs, class_token


def rollout_ref(vit, x, alpha=0.5):
    """Scores ``[B, P]``: row 0, patch columns, of the product of all blocks' ``(1+P)x(1+P)`` residual maps, float64."""
    patch_inputs, patches, class_inputs, _ = sa_streams(vit, x)
    scores = []
    for b in range(x.shape[0]):
        tokens = 1 + patches.shape[1]
        product = torch.eye(tokens, dtype=torch.float64)
        for block, entering in zip(vit.blocks, patch_inputs):  # first block first: each multiplies on the left
            normed = block.norm1(entering[b])
            mean = talking_heads_probs(block.attn, normed, normed)[0].mean(0).double()
            matrix = torch.eye(tokens, dtype=torch.float64)  # the class token passes untouched
            augmented = (1 - alpha) * mean + alpha * torch.eye(tokens - 1, dtype=torch.float64)
            matrix[1:, 1:] = augmented / augmented.sum(-1, keepdim=True)
            product = matrix @ product
        for block, class_token in zip(vit.blocks_token_only, class_inputs):
            context = torch.cat([class_token[b], patches[b]])
            row = class_attention_probs(block.attn, block.norm1(class_token[b]), block.norm1(context))[0].mean(0)[0]
            matrix = torch.eye(tokens, dtype=torch.float64)  # the patches pass untouched
            matrix[0] = (1 - alpha) * row.double()
            matrix[0, 0] += alpha
            matrix[0] /= matrix[0].sum()
            product = matrix @ product
        scores.append(product[0, 1:])
    return torch.stack(scores)


def glca_ref(model, x, local_index):
    """GLCA from timm's SA: the last class-attention block's copy, patches ``local_index`` over ``[class; patches]``."""
    _, patches, class_inputs, _ = sa_streams(model.vit, x)
    features = []
    for b in range(x.shape[0]):
        keys = torch.cat([class_inputs[-1][b], patches[b]])
        out = class_attention_ref(model.glca_block, patches[b, local_index[b]], keys)
        features.append(model.glca_norm(out.mean(0)))
    features = torch.stack(features)
    return features, model.glca_head(features)


def pwca_ref(vit, x, partner):
    """Each image's PWCA stream, the partner's keys/values from timm's SA stream at each block -> feature, logits."""
    patch_inputs, patches, class_inputs, _ = sa_streams(vit, x)
    features = []
    for b, p in enumerate(partner.tolist()):
        tokens = patch_inputs[0][b]
        for block, entering in zip(vit.blocks, patch_inputs):
            tokens = talking_heads_ref(block, tokens, entering[p])
        class_token = vit.cls_token[0]
        for block, partner_class in zip(vit.blocks_token_only, class_inputs):
            keys = torch.cat([class_token, tokens, partner_class[p], patches[p]])
            class_token = class_attention_ref(block, class_token, keys)
        features.append(vit.norm(class_token[0]))
    features = torch.stack(features)
    return features, vit.head(features)


# ---- tests ----

def test_sa_is_timms_cait_in_eval_and_in_train_without_pwca():
    vit, x = make_vit().eval(), images()
    with torch.no_grad():
        want_logits = vit(x)
        want_feature = vit.forward_head(vit.forward_features(x), pre_logits=True)
        for train, options in ((False, {}), (True, dict(use_pwca=False)), (True, dict(use_glca=False, use_pwca=False))):
            out = DCALCaiT(vit, **options).train(train)(x)
            torch.testing.assert_close(out.sa_logits, want_logits, rtol=0, atol=1e-5)
            torch.testing.assert_close(out.sa_feature, want_feature, rtol=0, atol=1e-5)
    assert out.glca_logits is out.pwca_logits is out.local_query_index is None  # both off: timm's plain CaiT


def test_a_partner_identical_to_the_image_gives_sas_output():
    model = build().train()
    assert all(block.attn.proj_w.bias.abs().min() > 0 for block in model.vit.blocks)
    with torch.no_grad():
        out = model(images(1).expand(2, -1, -1, -1), distractor_index=torch.tensor([1, 0]))
    torch.testing.assert_close(out.pwca_logits, out.sa_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.pwca_feature, out.sa_feature, rtol=0, atol=1e-5)


def test_pwca_attends_over_its_own_and_the_partners_sa_keys_at_every_block():
    model, x, partner = build().train(), images(3), torch.tensor([2, 0, 1])
    with torch.no_grad():
        out = model(x, distractor_index=partner)
        feature, logits = pwca_ref(model.vit, x, partner)
        sa_logits = model.vit(x)
    assert (out.pwca_logits - sa_logits).abs().max() > 0.05  # PWCA is no plain SA pass
    torch.testing.assert_close(out.pwca_feature, feature, rtol=0, atol=BOUND)
    torch.testing.assert_close(out.pwca_logits, logits, rtol=0, atol=BOUND)


def test_pwca_partner_gradient_switch():
    x, partner = images(3).requires_grad_(), torch.tensor([1, 2, 0])
    for gradient in (True, False):
        x.grad = None
        build(pwca_partner_gradient=gradient).train()(x, distractor_index=partner).pwca_logits[0].sum().backward()
        assert (x.grad[1].abs().max() > 0) == gradient  # image 0's partner; image 2 takes no part
        assert x.grad[0].abs().max() > 0 and x.grad[2].abs().max() == 0


def test_rollout_equals_the_full_matrix_product_through_every_block():
    model, x = build(), images(3)
    with torch.no_grad():
        want = rollout_ref(model.vit, x, model.residual_weight)
        scores = model.rollout_map(x).flatten(1)
        out = model.eval()(x)
        train = model.train()(x, distractor_index=torch.tensor([1, 2, 0]))
    assert model.rollout_map(x).shape == (3, 4, 4)
    torch.testing.assert_close(scores.double(), want, rtol=1e-4, atol=1e-6)
    expected = want.topk(num_local_queries(PATCHES, RATIO), dim=-1).indices
    assert torch.equal(out.local_query_index, expected) and torch.equal(train.local_query_index, expected)


def test_glca_is_the_last_class_attention_block_on_the_selected_patches():
    model, x = build().eval(), images(3)
    with torch.no_grad():
        out = model(x)
        expected = rollout_ref(model.vit, x).topk(num_local_queries(PATCHES, RATIO), dim=-1).indices
        feature, logits = glca_ref(model, x, expected)
    assert out.local_query_index.min() >= 0 and out.local_query_index.max() < PATCHES  # patches, never the class token
    torch.testing.assert_close(out.glca_feature, feature, rtol=0, atol=BOUND)
    torch.testing.assert_close(out.glca_logits, logits, rtol=0, atol=BOUND)


def test_glca_depends_on_the_selection_and_reads_the_class_token(monkeypatch):
    model, x = build().eval(), images(2)
    with torch.no_grad():
        chosen = model(x)
        other = torch.stack([torch.tensor([i for i in range(PATCHES) if i not in row][:4]) for row in
                             chosen.local_query_index.tolist()])
        monkeypatch.setattr(dcal_cait, 'select_local_queries', lambda scores, ratio: other)
        moved = model(x)
        model.vit.cls_token.normal_()  # the patches do not depend on it: only GLCA's keys/values do
        keys_changed = model(x)
    assert torch.equal(moved.local_query_index, other)
    assert (moved.glca_logits - chosen.glca_logits).abs().max() > 1e-2
    assert (keys_changed.glca_logits - moved.glca_logits).abs().max() > 1e-3
    torch.testing.assert_close(keys_changed.glca_logits, glca_ref(model, x, other)[1], rtol=0, atol=BOUND)


def test_random_queries_and_the_fields_each_mode_leaves_empty():
    x = images(2)
    with torch.no_grad():
        eval_out = build().eval()(x)
        sa_only = build(sa_only_inference=True).eval()(x)
        sa_only_train = build(sa_only_inference=True).train()(x)
        no_glca = build(use_glca=False).train()(x)
        torch.manual_seed(3)
        random = build(query_selection='random').eval()(x)
    assert eval_out.pwca_logits is None and eval_out.pwca_feature is None and eval_out.glca_logits is not None
    assert sa_only.glca_feature is sa_only.glca_logits is sa_only.local_query_index is sa_only.pwca_logits is None
    assert sa_only_train.glca_logits is not None and sa_only_train.pwca_logits is not None
    assert no_glca.glca_logits is None and no_glca.local_query_index is None and no_glca.pwca_logits is not None
    assert not hasattr(build(use_glca=False), 'glca_block')
    assert random.local_query_index.shape == (2, 4) and not torch.equal(random.local_query_index,
                                                                        eval_out.local_query_index)
    featureless = build(vit_kwargs=dict(num_classes=0)).eval()(x)
    assert featureless.sa_logits is None and featureless.glca_logits is None
    assert featureless.sa_feature.shape == featureless.glca_feature.shape == (2, 48)


def test_invalid_options_and_backbones_raise_clear_errors():
    with pytest.raises(ValueError, match='query_selection'):
        build(query_selection='top')
    with pytest.raises(ValueError, match='local query ratio'):
        build(local_query_ratio=0.0)
    with pytest.raises(ValueError, match='global_pool="token"'):
        DCALCaiT(make_vit(global_pool='avg'))
    with pytest.raises(ValueError, match='needs a timm Cait'):
        DCALCaiT(timm.create_model('deit_tiny_patch16_224', img_size=32, depth=1))
    with pytest.raises(ValueError, match=r'expects images \[B, C, 64, 64\].*img_size=\(96, 96\)'):
        build().eval()(images(1, size=96))


def test_a_checkpoint_at_another_size_loads_with_resampled_position_embeddings(tmp_path):
    source = make_vit(SIZE, seed=0)
    path = tmp_path / 'cait_64.pth'
    torch.save(source.state_dict(), path)
    torch.manual_seed(5)  # another initialisation than the file's
    model = DCALCaiT.from_timm(NAME, checkpoint_path=str(path), img_size=96, num_classes=5, local_query_ratio=RATIO,
                               **ARCH)
    want = resample_abs_pos_embed(source.pos_embed, [6, 6], num_prefix_tokens=0)
    assert model.vit.pos_embed.shape == (1, 36, 48)
    torch.testing.assert_close(model.vit.pos_embed, want, rtol=0, atol=0)
    torch.testing.assert_close(model.vit.blocks[1].attn.proj_l.weight, source.blocks[1].attn.proj_l.weight)
    for copy, original in ((model.glca_block, source.blocks_token_only[-1]), (model.glca_norm, source.norm),
                           (model.glca_head, source.head)):  # GLCA re-copied from SA after the load
        for (name, value), expected in zip(copy.state_dict().items(), original.state_dict().values()):
            torch.testing.assert_close(value, expected, rtol=0, atol=0, msg=name)
    assert model.eval()(images(1, size=96)).glca_logits.shape == (1, 5)


def test_timms_pretrained_weights_at_another_size(tmp_path):
    """timm alone refuses CaiT weights at another img_size; ``pretrained=True`` resizes them (a local file here)."""
    source = make_vit(384)
    path = tmp_path / 'cait_384.pth'
    torch.save(source.state_dict(), path)
    overlay = dict(file=str(path))
    with pytest.raises(RuntimeError, match='pos_embed'):
        timm.create_model(f'{NAME}.fb_dist_in1k', pretrained=True, img_size=96, pretrained_cfg_overlay=overlay,
                          **ARCH)
    model = DCALCaiT.from_timm(NAME, pretrained=True, img_size=96, num_classes=5, pretrained_cfg_overlay=overlay,
                               **ARCH)
    want = resample_abs_pos_embed(source.pos_embed, [6, 6], num_prefix_tokens=0)
    torch.testing.assert_close(model.vit.pos_embed, want, rtol=0, atol=0)
    torch.testing.assert_close(model.glca_block.attn.q.weight, source.blocks_token_only[-1].attn.q.weight)


def test_grad_checkpointing_gives_the_same_gradients(monkeypatch):
    calls = []
    checkpoint = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, 'checkpoint', lambda *a, **k: calls.append(1) or checkpoint(*a, **k))
    x, partner, labels = images(3), torch.tensor([2, 0, 1]), torch.tensor([0, 3, 4])
    grads = []
    for enabled in (False, True):
        model = build(vit_kwargs=dict(drop_path_rate=0.1), grad_checkpointing=enabled).train()
        assert model.grad_checkpointing == model.vit.grad_checkpointing == enabled
        torch.manual_seed(7)
        out = model(x, distractor_index=partner)
        loss = sum(F.cross_entropy(logits, labels) for logits in (out.sa_logits, out.glca_logits, out.pwca_logits))
        loss.backward()
        grads.append({name: param.grad for name, param in model.named_parameters()})
    assert len(calls) == len(model.vit.blocks) + len(model.vit.blocks_token_only) + 1  # every block, and GLCA's
    assert grads[0].keys() == grads[1].keys() and all(grad is not None for grad in grads[0].values())
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_bfloat16_autocast_on_cpu():
    model, x = build().train(), images(3)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(x, distractor_index=torch.tensor([1, 2, 0]))
        with torch.no_grad():
            heat = model.rollout_map(x)
    for field in ('sa_logits', 'glca_logits', 'pwca_logits', 'sa_feature', 'glca_feature', 'pwca_feature'):
        assert torch.isfinite(getattr(out, field)).all(), field
    assert heat.dtype == torch.float32 and torch.isfinite(heat).all()
    rows = [torch.randn(3, 1 + PATCHES).softmax(-1) for _ in range(2)]
    maps = [torch.randn(3, PATCHES, PATCHES).softmax(-1) for _ in range(2)]
    want = dcal_cait.class_attention_rollout(rows, maps)
    with torch.autocast('cpu', dtype=torch.bfloat16):  # the rollout runs in float32 under autocast too
        assert torch.equal(dcal_cait.class_attention_rollout(rows, maps), want)
    sum(logits.float().sum() for logits in (out.sa_logits, out.glca_logits, out.pwca_logits)).backward()
    assert all(torch.isfinite(param.grad).all() for param in model.parameters() if param.grad is not None)


def test_drop_path_drops_the_talking_heads_branches_as_timm():
    model, x = build(vit_kwargs=dict(drop_path_rate=1.0)).train(), images(1)  # every talking-heads branch dropped
    out = model(torch.cat([x, x]), distractor_index=torch.tensor([1, 0]))
    expected = model.vit(x)  # timm's train forward: as deterministic (its class-attention blocks have no drop path)
    torch.testing.assert_close(out.sa_logits[:1], expected, rtol=0, atol=BOUND)
    torch.testing.assert_close(out.pwca_logits, out.sa_logits, rtol=0, atol=BOUND)


def test_the_family_factory_passes_cait_its_glca_options_and_refuses_the_one_it_lacks():
    """CaiT's GLCA is a copy of its last class-attention block: it takes R and the rest, not ``glca_block_index``."""
    model = dcal_from_timm(NAME, img_size=SIZE, local_query_ratio=0.5, residual_weight=0.25, glca_block_index=-1,
                           **ARCH)
    assert isinstance(model, DCALCaiT) and model.use_glca
    assert (model.local_query_ratio, model.residual_weight) == (0.5, 0.25)
    with pytest.raises(ValueError, match=r'DCALCaiT \(cait_xs24_384\) has no option glca_block_index'):
        dcal_from_timm(NAME, img_size=SIZE, glca_block_index=0, **ARCH)
