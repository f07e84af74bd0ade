"""Original Google ViT ``.npz`` checkpoints, read by timm's own reader: the same model as the ``.pth`` of the same
weights."""
import pytest
import timm
import torch

from dcal_plugin.core import DCALViT

from ..vit_npz import save_vit_npz

SMALL = dict(depth=2, embed_dim=64, num_heads=2)
NPZ_SIZE, OTHER_SIZE = 64, (96, 64)  # 4x4 patches in the file, 6x4 in the model
CLASSES = 5


def build_timm(name, img_size=NPZ_SIZE, num_classes=CLASSES, seed=0, **overrides):
    torch.manual_seed(seed)
    return timm.create_model(name, img_size=img_size, num_classes=num_classes, **dict(SMALL, **overrides)).eval()


def build_dcal(name, path=None, img_size=NPZ_SIZE, num_classes=CLASSES, seed=0, **overrides):
    torch.manual_seed(seed)
    return DCALViT.from_timm(name, checkpoint_path=None if path is None else str(path), img_size=img_size,
                             num_classes=num_classes, **dict(SMALL, **overrides)).eval()


@pytest.fixture(scope='module', params=['vit_base_patch16_224', 'vit_base_r50_s16_224'])
def source(request, tmp_path_factory):
    """A small timm ViT (or R50 hybrid) with every parameter random, and its weights as ``.npz`` and ``.pth``."""
    name = request.param
    model = build_timm(name)
    with torch.no_grad():  # no zero biases or unit norm scales, so a misplaced one shows
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    folder = tmp_path_factory.mktemp('npz')
    save_vit_npz(model, str(folder / 'weights.npz'))
    torch.save(model.state_dict(), folder / 'weights.pth')
    return dict(name=name, model=model, npz=folder / 'weights.npz', pth=folder / 'weights.pth')


def images(img_size=NPZ_SIZE):
    height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
    return torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(1))


def assert_same_state(model, reference):
    state, want = model.state_dict(), reference.state_dict()
    assert state.keys() == want.keys()
    different = [key for key in want if not torch.equal(state[key], want[key])]
    assert not different, f'{len(different)} tensors differ, e.g. {different[:3]}'


def test_npz_gives_the_weights_that_wrote_it(source):
    model = build_dcal(source['name'], source['npz'])
    assert_same_state(model.vit, source['model'])
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model(x).sa_logits, source['model'](x), rtol=1e-5, atol=1e-5)
    # GLCA starts as a copy of the loaded weights
    torch.testing.assert_close(model.glca_block.attn.qkv.weight, source['model'].blocks[-1].attn.qkv.weight)
    torch.testing.assert_close(model.glca_head.weight, source['model'].head.weight)


@pytest.mark.parametrize('num_classes', [0, CLASSES, 7])
def test_npz_and_pth_of_the_same_weights_load_the_same_model(source, num_classes):
    from_npz = build_dcal(source['name'], source['npz'], num_classes=num_classes)
    from_pth = build_dcal(source['name'], source['pth'], num_classes=num_classes)
    assert_same_state(from_npz, from_pth)  # a classifier of another size keeps its initialisation in both
    assert from_npz.vit.num_classes == num_classes


def test_npz_at_another_size_is_resized_as_timms_own_reader_resizes_it(source):
    reference = build_timm(source['name'], img_size=OTHER_SIZE, num_classes=0)
    reference.load_pretrained(str(source['npz']))
    model = build_dcal(source['name'], source['npz'], img_size=OTHER_SIZE, num_classes=0)
    assert model.grid_size == (6, 4) and model.vit.pos_embed.shape == (1, 1 + 6 * 4, SMALL['embed_dim'])
    assert_same_state(model.vit, reference)
    x = images(OTHER_SIZE)
    with torch.no_grad():
        torch.testing.assert_close(model(x).sa_feature, reference(x), rtol=1e-5, atol=1e-5)


def test_npz_that_does_not_fit_names_the_file_and_leaves_the_model_alone(tmp_path):
    name = 'vit_base_patch16_224'
    shallow, narrow, not_npz = tmp_path / 'shallow.npz', tmp_path / 'narrow.npz', tmp_path / 'state_dict.npz'
    save_vit_npz(build_timm(name, depth=1), str(shallow))
    save_vit_npz(build_timm(name, embed_dim=32), str(narrow))
    torch.save(build_timm(name).state_dict(), not_npz)
    model = build_dcal(name)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    with pytest.raises(ValueError, match=r'shallow\.npz does not fit vit_base_patch16_224 \(img_size=\(64, 64\), '
                                         r'depth=2.*KeyError.*encoderblock_1'):
        model.load_timm_checkpoint(str(shallow))
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())
    with pytest.raises(ValueError, match=r'narrow\.npz does not fit .*embed_dim=64.*RuntimeError'):
        build_dcal(name, narrow)
    with pytest.raises(ValueError,
                       match=r'state_dict\.npz does not fit .*did not find a supported JAX/Flax parameter layout'):
        build_dcal(name, not_npz)


def test_parameters_the_npz_format_lacks_are_named_as_missing(tmp_path):
    path = tmp_path / 'vit.npz'
    save_vit_npz(build_timm('vit_base_patch16_224'), str(path))
    with pytest.raises(ValueError, match=r'vit\.npz does not match .*missing \[4\]: blocks\.0\.ls1\.gamma'):
        build_dcal('vit_base_patch16_224', path, init_values=0.1)  # layer scale: not in the original ViT


def test_a_deeper_npz_gives_its_first_blocks_as_in_timm(tmp_path):
    path = tmp_path / 'deeper.npz'
    save_vit_npz(build_timm('vit_base_patch16_224', depth=3, seed=1), str(path))
    reference = build_timm('vit_base_patch16_224')
    reference.load_pretrained(str(path))
    assert_same_state(build_dcal('vit_base_patch16_224', path).vit, reference)
