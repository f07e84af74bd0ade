"""The built-in pretrained ViT: trained on the digit pairs, written as timm writes a state_dict, read by every path."""
import json

import pytest
import timm
import torch

from dcal_plugin.core import DCALViT
from dcal_plugin.demo_data.digit_pairs import held_out_samples
from dcal_plugin.source_pretraining import SOURCE_MODEL, PretrainingSettings, build_source_vit, pretrain_source_vit

TINY = PretrainingSettings(train_images=64, test_images=32, epochs=2, batch_size=32)


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp('pretrained') / 'source.pth'
    lines = []
    record = pretrain_source_vit(out, TINY, log=lines.append)
    return out, record, lines


def test_it_writes_a_timm_state_dict_and_its_record(pretrained):
    out, record, lines = pretrained
    state_dict = torch.load(out, weights_only=True)
    vit = timm.create_model(SOURCE_MODEL['model_name'], pretrained=False, num_classes=45,
                            **{k: v for k, v in SOURCE_MODEL.items() if k != 'model_name'})
    vit.load_state_dict(state_dict)  # strict: exactly timm's keys and shapes
    assert json.loads(out.with_suffix('.json').read_text()) == json.loads(json.dumps(record))
    assert record['held_out_samples'] == held_out_samples().tolist()
    assert len(record['source_test_top1']) == 2 and len(lines) == 3  # a line for the data, one per epoch
    assert not list(out.parent.glob('*.partial'))


def test_the_file_is_the_model_whose_accuracy_the_record_gives(pretrained):
    """The saved weights, evaluated anew on the source test images, score what the record says; the untrained don't."""
    from dcal_plugin.demo_data.digit_pairs import render_digit_pairs, split_pair_sources
    from dcal_plugin.demo_data.options import RenderOptions
    from dcal_plugin.source_pretraining import SOURCE_IMAGES, _accuracy
    out, record, _ = pretrained
    _, test_pool = split_pair_sources(held_out_samples(), seed=TINY.seed)
    images, labels = render_digit_pairs(TINY.test_images, test_pool, RenderOptions(**SOURCE_IMAGES), TINY.seed + 1)
    vit = build_source_vit()
    vit.load_state_dict(torch.load(out, weights_only=True))
    assert _accuracy(vit, images, labels) == pytest.approx(record['source_test_top1'][-1])
    torch.manual_seed(TINY.seed)
    assert not torch.equal(build_source_vit().state_dict()['blocks.0.attn.qkv.weight'],
                           vit.state_dict()['blocks.0.attn.qkv.weight'])


def test_dcal_fine_tunes_it_at_another_size_with_resized_position_embeddings(pretrained):
    out, _, _ = pretrained
    model = DCALViT.from_timm('deit_tiny_patch16_224', checkpoint_path=str(out), img_size=48, patch_size=8, depth=4,
                              num_classes=10)
    trained = torch.load(out, weights_only=True)
    assert model.vit.pos_embed.shape == (1, 1 + 6 * 6, 192)
    torch.testing.assert_close(model.vit.blocks[3].mlp.fc2.weight, trained['blocks.3.mlp.fc2.weight'])
    torch.testing.assert_close(model.glca_block.attn.qkv.weight, trained['blocks.3.attn.qkv.weight'])
    resized = timm.layers.resample_abs_pos_embed(trained['pos_embed'], (6, 6), num_prefix_tokens=1)
    torch.testing.assert_close(model.vit.pos_embed, resized)


def test_an_interrupted_write_leaves_no_checkpoint(tmp_path, monkeypatch):
    import dcal_plugin.source_pretraining as module

    def die_mid_write(obj, path):
        path.write_bytes(b'PK\x03\x04 truncated')
        raise KeyboardInterrupt

    monkeypatch.setattr(module.torch, 'save', die_mid_write)
    out = tmp_path / 'source.pth'
    with pytest.raises(KeyboardInterrupt):
        pretrain_source_vit(out, PretrainingSettings(train_images=32, test_images=32, epochs=1, batch_size=32),
                            log=lambda line: None)
    assert not out.exists() and not out.with_suffix('.json').exists()
