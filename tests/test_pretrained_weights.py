"""timm's pretrained weights through timm's own hub mechanism, offline: a local Hugging Face cache holding weights timm
wrote.

Each check runs in a fresh process with ``HF_HOME`` at a temporary folder and ``HF_HUB_OFFLINE=1``
(huggingface_hub reads both at import), through the core, the MMPretrain backbone and torchreid's
own ``build_model`` with its default ``pretrained=True``.
"""
import json
import os
import subprocess
import sys

import pytest
import timm
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAGGED = 'deit_tiny_patch16_224.fb_in1k'  # the paper's tag for DeiT-Tiny
COMMIT = '0' * 40


@pytest.fixture(scope='module')
def hub_home(tmp_path_factory):
    """``HF_HOME`` whose hub cache holds DeiT-Tiny fb_in1k as timm's ``save_for_hf`` writes it; the weights too."""
    home = tmp_path_factory.mktemp('hf_home')
    torch.manual_seed(0)
    vit = timm.create_model(TAGGED, pretrained=False)
    snapshot = home / 'hub' / f'models--timm--{TAGGED}' / 'snapshots' / COMMIT
    timm.models.save_for_hf(vit, str(snapshot), safe_serialization=True)
    (snapshot.parent.parent / 'refs').mkdir()
    (snapshot.parent.parent / 'refs' / 'main').write_text(COMMIT)
    return home, vit.state_dict()


def run_offline(home, script):
    env = dict(os.environ, HF_HOME=str(home), HF_HUB_OFFLINE='1')
    return subprocess.run([sys.executable, '-c', script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


CHECKS = {
    'core': "from dcal_plugin.core import DCALViT\n"
            "vit = DCALViT.from_timm('deit_tiny_patch16_224', pretrained=True, img_size=64).vit\n",
    'mmpretrain': "from mmpretrain.registry import MODELS\nimport dcal_plugin.mmpretrain\n"
                  "backbone = MODELS.build(dict(type='DCALVisionTransformer', model_name='deit_tiny_patch16_224', "
                  "img_size=64, pretrained=True))\nbackbone.init_weights()\nvit = backbone.dcal.vit\n",
    # torchreid's default
    'torchreid': "import torchreid\nimport dcal_plugin.torchreid\n"
                 "vit = torchreid.models.build_model('dcal_deit_tiny', num_classes=5).dcal.vit\n",
    # tools/train_reid.py's yaml defaults (model.pretrained True, torchreid's), at 64x64
    'torchreid yaml': "from dcal_plugin.torchreid import build_dcal_reid, get_default_config\n"
                      "from dcal_plugin.torchreid.config import model_kwargs\n"
                      "cfg = get_default_config()\ncfg.merge_from_list(['data.height', 64, 'data.width', 64])\n"
                      "vit = build_dcal_reid(num_classes=5, **model_kwargs(cfg)).dcal.vit\n",
}
REPORT = ("import json\nprint(json.dumps(dict(tag=vit.pretrained_cfg['tag'], "
          "qkv=vit.blocks[3].attn.qkv.weight.sum().item(), pos=list(vit.pos_embed.shape))))\n")


@pytest.mark.slow  # a fresh process
@pytest.mark.parametrize('entry', sorted(CHECKS))
def test_pretrained_true_loads_the_paper_tag_from_the_hub_cache_offline(hub_home, entry):
    if entry != 'core':
        pytest.importorskip(entry.split()[0])
    home, weights = hub_home
    proc = run_offline(home, CHECKS[entry] + REPORT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded['tag'] == 'fb_in1k'
    assert loaded['qkv'] == pytest.approx(weights['blocks.3.attn.qkv.weight'].sum().item(), rel=1e-6)
    grid = 64 // 16
    assert loaded['pos'][1] == (grid * grid + 1 if entry != 'torchreid' else 16 * 8 + 1)  # resized to the model's size


@pytest.mark.slow  # a fresh process
def test_a_local_weights_file_in_the_torchreid_yaml_replaces_the_hub_weights(tmp_path):
    """model.checkpoint, model.load_weights or a model.resume file give the weights: no hub (offline, none cached)."""
    pytest.importorskip('torchreid')
    from dcal_plugin.torchreid import get_default_config
    from dcal_plugin.torchreid.config import uses_hub_weights
    cfg = get_default_config()
    assert cfg.model.pretrained is True and uses_hub_weights(cfg)  # torchreid's default
    for key, value in (('checkpoint', 'deit.pth'), ('load_weights', 'model.pth.tar-60'),
                       ('resume', 'log/model/model.pth.tar-30')):
        given = cfg.clone()
        given.model[key] = value
        assert not uses_hub_weights(given), key
    cfg.model.resume = 'auto'  # may find nothing to resume from: the hub weights stay the start
    assert uses_hub_weights(cfg)
    cfg.model.pretrained = False
    assert not uses_hub_weights(cfg)
    torch.manual_seed(0)
    vit = timm.create_model('deit_tiny_patch16_224', pretrained=False, num_classes=0)
    torch.save(vit.state_dict(), tmp_path / 'deit.pth')
    script = (CHECKS['torchreid yaml'].replace("cfg = get_default_config()\n", "cfg = get_default_config()\n"
                                               f"cfg.model.checkpoint = {str(tmp_path / 'deit.pth')!r}\n")
              + "print(vit.blocks[3].attn.qkv.weight.sum().item())\n")
    proc = run_offline(tmp_path / 'empty_home', script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.split()[-1]) == pytest.approx(vit.blocks[3].attn.qkv.weight.sum().item(), rel=1e-6)


@pytest.mark.slow  # a fresh process
@pytest.mark.parametrize('entry', ['core', 'torchreid yaml'])
def test_without_network_and_cache_one_error_names_both_ways_out(tmp_path, entry):
    if entry != 'core':
        pytest.importorskip('torchreid')
    proc = run_offline(tmp_path, CHECKS[entry])
    assert proc.returncode != 0
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith('RuntimeError') and TAGGED in message
    assert 'network' in message and 'checkpoint_path' in message and 'model.checkpoint' in message
    assert 'model.pretrained False' in message


class _Requested(Exception):
    """Raised by the recording stand-in of ``timm.create_model`` once it has the requested name."""


@pytest.mark.parametrize('entry, expected', [
    ('core', 'vit_base_patch16_224.orig_in21k'),  # FGVC: Google's original 21k ViT-B/16, as TransFG
    ('mmpretrain', 'vit_base_patch16_224.orig_in21k'),
    ('torchreid', 'vit_base_patch16_224.orig_in21k_ft_in1k'),  # TransReID's jx_vit_base_p16_224-80ecf9dd.pth
    ('core_r50', 'vit_base_r50_s16_224.orig_in21k'),
])
def test_pretrained_true_asks_timm_for_the_tag_of_the_papers_lineage(monkeypatch, entry, expected):
    import dcal_plugin.core.pretrained as pretrained

    def record(name, pretrained=False, **kwargs):
        raise _Requested(name if pretrained else None)

    monkeypatch.setattr(pretrained.timm, 'create_model', record)
    with pytest.raises(_Requested) as requested:
        if entry.startswith('core'):
            from dcal_plugin.core import DCALViT
            DCALViT.from_timm(expected.split('.')[0], pretrained=True)
        elif entry == 'mmpretrain':
            pytest.importorskip('mmpretrain')
            from dcal_plugin.mmpretrain import DCALVisionTransformer
            DCALVisionTransformer('vit_base_patch16_224', pretrained=True)
        else:
            torchreid = pytest.importorskip('torchreid')
            import dcal_plugin.torchreid  # noqa: F401
            torchreid.models.build_model('dcal_vit_base', num_classes=5)  # torchreid's default pretrained=True
    assert str(requested.value) == expected


def test_the_tag_of_a_task_the_paper_has_not_is_refused():
    from dcal_plugin.core import paper_pretrained_tag
    assert paper_pretrained_tag('deit_small_patch16_224', 'reid') == 'fb_in1k'
    assert paper_pretrained_tag('vit_small_patch16_224', 'fgvc') is None  # no paper row: timm's default tag
    with pytest.raises(ValueError, match="task must be one of \\('fgvc', 'reid'\\)"):
        paper_pretrained_tag('deit_small_patch16_224', 'detection')
