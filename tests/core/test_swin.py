"""DCAL on Swin (the paper's Swin-T row, PWCA only): SA is timm's Swin, PWCA attends inside each shifted window."""
import pytest
import timm
import torch
from timm.layers import DropPath
from timm.models.swin_transformer import window_partition, window_reverse

from dcal_plugin.core import DCALCaiT, DCALViT
from dcal_plugin.core.dcal_swin import DCALSwin
from dcal_plugin.core.window_blocks import self_and_pair_window_block
from dcal_plugin.core.families import dcal_family, dcal_from_timm

# a 16x16 token grid in 4x4 windows: the second block of each stage shifts by 2 under the mask; (64, 40) pads 10 -> 12
SIZES = [(64, 64), (64, 40)]
BOUND = 1e-5


def build(size=(64, 64), timm_kwargs=None, **kwargs):
    torch.manual_seed(0)
    options = {'window_size': 4, 'drop_path_rate': 0.0, **(timm_kwargs or {})}
    vit = timm.create_model('swin_tiny_patch4_window7_224', img_size=size, depths=(2, 2), num_heads=(2, 4),
                            embed_dim=24, num_classes=5, **options)
    with torch.no_grad():  # relative position biases as trained models have them, not timm's init of std 0.02
        for stage in vit.layers:
            for block in stage.blocks:
                block.attn.relative_position_bias_table.normal_(std=1.0)
    return DCALSwin(vit, **kwargs)


def images(size=(64, 64), batch=3, seed=1):
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('size', SIZES)
def test_sa_is_timms_swin_in_eval_and_in_train_beside_pwca(size):
    model, x = build(size), images(size)
    assert any(any(block.shift_size) for stage in model.vit.layers for block in stage.blocks)
    expected = model.vit.eval()(x)
    out = model.eval()(x)
    assert out.pwca_logits is None and out.glca_logits is None
    torch.testing.assert_close(out.sa_logits, expected, rtol=0, atol=BOUND)
    pooled = model.vit.forward_head(model.vit.forward_features(x), pre_logits=True)
    torch.testing.assert_close(out.sa_feature, pooled, rtol=0, atol=BOUND)
    train = model.train()(x, distractor_index=torch.tensor([1, 2, 0]))
    torch.testing.assert_close(train.sa_logits, expected, rtol=0, atol=BOUND)


@pytest.mark.parametrize('size', SIZES)
def test_a_partner_identical_to_the_image_gives_sas_output(size):
    model, x = build(size).train(), images(size, batch=1)
    out = model(torch.cat([x, x]), distractor_index=torch.tensor([1, 0]))
    torch.testing.assert_close(out.pwca_feature, out.sa_feature, rtol=0, atol=BOUND)
    torch.testing.assert_close(out.pwca_logits, out.sa_logits, rtol=0, atol=BOUND)


def reference_pwca_block(block, own, partner):
    """PWCA of one image through one Swin block ``[H, W, C]``, window by window, from the block's weights."""
    height, width, channels = own.shape
    shift, window = tuple(block.shift_size), tuple(block.window_size)
    heads = block.attn.num_heads

    def windows_of(tokens):
        tokens = torch.roll(block.norm1(tokens)[None], shifts=(-shift[0], -shift[1]), dims=(1, 2))
        pad_h, pad_w = (-height) % window[0], (-width) % window[1]
        tokens = torch.nn.functional.pad(tokens, (0, 0, 0, pad_w, 0, pad_h))
        return window_partition(tokens, window).reshape(-1, window[0] * window[1], channels)

    own_windows, partner_windows = windows_of(own), windows_of(partner)
    bias = block.attn._get_rel_pos_bias()[0]
    outputs = []
    for index in range(own_windows.shape[0]):
        mask = 0 if block.attn_mask is None else block.attn_mask[index]
        both = torch.cat([own_windows[index], partner_windows[index]])
        q, _, _ = block.attn.qkv(own_windows[index]).reshape(-1, 3, heads, channels // heads).permute(1, 2, 0, 3)
        _, k, v = block.attn.qkv(both).reshape(-1, 3, heads, channels // heads).permute(1, 2, 0, 3)
        logits = q @ k.transpose(-1, -2) * block.attn.scale + torch.cat([bias + mask, bias + mask], dim=-1)
        out = (logits.softmax(dim=-1) @ v).transpose(0, 1).reshape(-1, channels)
        outputs.append(block.attn.proj(out))
    padded = (height + (-height) % window[0], width + (-width) % window[1])
    out = window_reverse(torch.stack(outputs).reshape(-1, *window, channels), window, *padded)[0, :height, :width]
    x = own + torch.roll(out, shifts=shift, dims=(0, 1))
    return x + block.mlp(block.norm2(x))


def test_pwca_attends_over_the_partners_sa_window_at_each_block():
    model, x = build().train(), images()
    partner = torch.tensor([2, 0, 1])
    block_inputs = []
    hooks = [block.register_forward_pre_hook(lambda module, args: block_inputs.append(args[0]))
             for stage in model.vit.layers for block in stage.blocks]
    model.vit.forward_features(x)
    for hook in hooks:
        hook.remove()
    pwca = model.vit.patch_embed(x[0:1])[0]
    index = 0
    for stage in model.vit.layers:
        pwca = stage.downsample(pwca[None])[0]
        for block in stage.blocks:
            pwca = reference_pwca_block(block, pwca, block_inputs[index][partner[0]])
            index += 1
    expected = model.vit.forward_head(model.vit.norm(pwca[None]))
    out = model(x, distractor_index=partner)
    torch.testing.assert_close(out.pwca_logits[0:1], expected, rtol=0, atol=BOUND)


@pytest.mark.parametrize('partner_gradient', [True, False])
def test_partner_gradient_reaches_the_partner_image_only_when_asked(partner_gradient):
    model, x = build(pwca_partner_gradient=partner_gradient).train(), images().requires_grad_()
    out = model(x, distractor_index=torch.tensor([1, 2, 0]))
    out.pwca_logits[0].sum().backward()
    assert x.grad[0].abs().sum() > 0
    assert (x.grad[1].abs().sum() > 0) == partner_gradient
    assert x.grad[2].abs().sum() == 0


def test_grad_checkpointing_gives_the_same_gradients():
    gradients = []
    for checkpointing in (False, True):
        model = build(grad_checkpointing=checkpointing).train()
        assert model.grad_checkpointing == checkpointing
        out = model(images(), distractor_index=torch.tensor([1, 2, 0]))
        (out.sa_logits.sum() + out.pwca_logits.square().sum()).backward()
        gradients.append([parameter.grad for parameter in model.parameters()])
    for without, with_checkpointing in zip(*gradients):
        torch.testing.assert_close(with_checkpointing, without)


def test_bf16_autocast_trains_with_finite_outputs():
    model = build().train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(images(), distractor_index=torch.tensor([1, 2, 0]))
    (out.sa_logits.float().sum() + out.pwca_logits.float().sum()).backward()
    assert torch.isfinite(out.pwca_logits.float()).all()
    assert all(torch.isfinite(parameter.grad).all() for parameter in model.parameters())


def test_a_dynamic_size_model_at_other_sizes_keeps_timms_masks_and_the_pair_property():
    model = build((64, 64), timm_kwargs=dict(dynamic_img_size=True)).train()  # masks built per input, as timm
    for size in ((64, 40), (96, 64)):
        x = images(size, batch=1)
        out = model(torch.cat([x, x]), distractor_index=torch.tensor([1, 0]))
        torch.testing.assert_close(out.sa_logits[:1], model.vit(x), rtol=0, atol=BOUND)
        torch.testing.assert_close(out.pwca_logits, out.sa_logits, rtol=0, atol=BOUND)


def test_drop_path_drops_the_residual_branches_of_both_streams_as_timm():
    model, x = build().train(), images()
    for stage in model.vit.layers:
        for block in stage.blocks:
            block.drop_path1 = block.drop_path2 = DropPath(1.0)  # every residual branch dropped
    out = model(x, distractor_index=torch.tensor([1, 2, 0]))
    expected = model.vit(x)  # timm's train forward: as deterministic, with every branch dropped
    torch.testing.assert_close(out.sa_logits, expected, rtol=0, atol=BOUND)
    torch.testing.assert_close(out.pwca_logits, expected, rtol=0, atol=BOUND)


def test_windows_and_shifts_of_two_sizes_and_attention_dropout_are_timms():
    # 4 x 2 windows shift by (2, 1); attention dropout 1 zeroes every attention output, in timm's blocks and in ours
    for timm_kwargs in (dict(window_size=(4, 2)), dict(attn_drop_rate=1.0)):
        model, x = build(timm_kwargs=timm_kwargs).train(), images()
        out = model(x, distractor_index=torch.tensor([1, 2, 0]))
        torch.testing.assert_close(out.sa_logits, model.vit(x), rtol=0, atol=BOUND)


def test_a_block_without_partner_is_timms_block():
    model = build().train()
    for stage_index, stage in enumerate(model.vit.layers):
        size = 16 // 2 ** stage_index
        x = torch.randn(2, size, size, stage.blocks[0].norm1.normalized_shape[0])
        for block in stage.blocks:
            torch.testing.assert_close(self_and_pair_window_block(block, x), block(x), rtol=0, atol=BOUND)


def test_the_families_options_have_dcalvits_defaults():
    for family in (DCALSwin, DCALCaiT):
        shared = family.option_defaults()
        assert shared == {name: DCALViT.option_defaults()[name] for name in shared}


def test_heads_of_another_width_than_the_tokens_train():
    model, x = build(timm_kwargs=dict(head_dim=16)).train(), images()  # 2 heads x 16 != 24 channels
    out = model(x, distractor_index=torch.tensor([1, 2, 0]))
    torch.testing.assert_close(out.sa_logits, model.vit(x), rtol=0, atol=BOUND)


def test_a_swin_that_does_not_average_its_tokens_is_refused():
    with pytest.raises(ValueError, match='global_pool must be "avg"'):
        DCALSwin(timm.create_model('swin_tiny_patch4_window7_224', img_size=64, window_size=4, depths=(2, 2),
                                   num_heads=(2, 4), embed_dim=24, global_pool=''))


def test_the_family_factory_builds_swin_pwca_only_from_every_adapters_options():
    assert dcal_family('swin_tiny_patch4_window7_224') is DCALSwin
    options = dict(img_size=64, window_size=4, depths=(2, 2), num_heads=(2, 4), embed_dim=24)
    model = dcal_from_timm('swin_tiny_patch4_window7_224', use_glca=False, local_query_ratio=0.3,
                           query_selection='rollout', use_pwca=False, **options)
    assert isinstance(model, DCALSwin) and not model.use_pwca and not model.use_glca
    with pytest.raises(ValueError, match='use_glca=False'):
        dcal_from_timm('swin_tiny_patch4_window7_224', use_glca=True, **options)
    assert not dcal_from_timm('swin_tiny_patch4_window7_224', **options).use_glca  # the core's own call: no option


def test_a_checkpoint_of_another_input_size_loads(tmp_path):
    source = build((64, 64))
    path = tmp_path / 'swin.pth'
    torch.save(source.vit.state_dict(), path)
    model = DCALSwin.from_timm('swin_tiny_patch4_window7_224', checkpoint_path=str(path), img_size=(64, 40),
                               window_size=4, depths=(2, 2), num_heads=(2, 4), embed_dim=24, num_classes=5)
    for name, value in source.vit.state_dict().items():
        if 'attn_mask' not in name:
            torch.testing.assert_close(model.vit.state_dict()[name], value)
