"""tools/export_onnx.py: onnxruntime runs the file on images the export never saw and gives PyTorch's predictions."""
import re
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS

from dcal_plugin.mmpretrain import build_trained_model

from .conftest import load_tool, small_config

onnxruntime = pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')  # torch's ONNX exporter needs it


@pytest.fixture(scope='module')
def tool():
    return load_tool('export_onnx')


@pytest.fixture(scope='module')
def trained(digits_roots, tmp_path_factory):
    """(config file, checkpoint) of the small config, its weights drawn for peaked attention (a clear top-R)."""
    folder = tmp_path_factory.mktemp('export_onnx')
    cfg = small_config(digits_roots['cub'], folder / 'work')
    config = folder / 'small.py'
    cfg.dump(str(config))
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    model = MODELS.build(dict(cfg.model, data_preprocessor=cfg.data_preprocessor))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(('qkv.weight', 'fc.weight')):
                param.normal_(0.0, 0.25)
            elif name.endswith(('cls_token', 'pos_embed')):
                param.normal_(0.0, 1.0)
    checkpoint = folder / 'model.pth'
    torch.save(dict(state_dict=model.state_dict(), meta={}), checkpoint)
    return config, checkpoint


@pytest.fixture(scope='module')
def unseen_images(digits_roots, trained):
    """Five digits images of five classes as the config's test pipeline packs them (BGR, 0-255): inputs and samples."""
    init_default_scope('mmpretrain')
    pipeline = Compose(Config.fromfile(str(trained[0])).test_pipeline)
    paths = sorted((digits_roots['cub'] / 'images').rglob('*.jpg'))[::9][:5]
    return [pipeline(dict(img_path=str(path))) for path in paths]


def run_onnx(onnx_file, images):
    """``{output name: array}`` of onnxruntime on images ``[N, 3, H, W]``."""
    session = onnxruntime.InferenceSession(str(onnx_file), providers=['CPUExecutionProvider'])
    assert [(i.name, i.shape[1:]) for i in session.get_inputs()] == [('images', [3, 32, 32])]
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, {'images': images.float().numpy()})))


def pytorch_reference(config, checkpoint, samples, sa_only=False):
    """mmpretrain's own predictions on ``samples``: test_step's scores, the head's logits, GLCA's local queries."""
    cfg = Config.fromfile(str(config))
    cfg.model.backbone.sa_only_inference = sa_only
    model, _ = build_trained_model(cfg, str(checkpoint))
    data = {'inputs': [sample['inputs'] for sample in samples],
            'data_samples': [sample['data_samples'] for sample in samples]}
    with torch.no_grad():
        predictions = model.test_step(data)
        inputs = model.data_preprocessor(data)['inputs']
        logits = model.head(model.extract_feat(inputs))
        local_query_index = model.backbone.dcal(inputs).local_query_index
    return dict(scores=torch.stack([p.pred_score for p in predictions]).numpy(), sa_logits=logits[0].numpy(),
                glca_logits=None if logits[1] is None else logits[1].numpy(),
                local_query_index=None if local_query_index is None else local_query_index.numpy())


def unseen_batches(samples):
    """The images as a batch of five and as a batch of one: neither the export's batch nor its check's."""
    images = torch.stack([sample['inputs'] for sample in samples])
    return [(images, samples), (images[3:4], samples[3:4])]


@pytest.mark.slow
def test_export_with_glca_matches_pytorch_on_unseen_images(tool, trained, unseen_images, tmp_path, capsys):
    config, checkpoint = trained
    onnx_file = tmp_path / 'dcal.onnx'
    tool.main([str(config), str(checkpoint), '--out', str(onnx_file)])
    printed = capsys.readouterr().out
    assert 'outputs scores, sa_logits, glca_logits, local_query_index, opset 18' in printed
    assert 'exporting in float32\n' in printed
    assert 'local_query_index the same top-R in 3/3 images' in printed  # the tool's own check
    for images, samples in unseen_batches(unseen_images):
        got = run_onnx(onnx_file, images)
        want = pytorch_reference(config, checkpoint, samples)
        assert list(got) == ['scores', 'sa_logits', 'glca_logits', 'local_query_index']
        for name in ('scores', 'sa_logits', 'glca_logits'):
            np.testing.assert_allclose(got[name], want[name], atol=1e-4, rtol=1e-5, err_msg=name)
        assert got['local_query_index'].dtype == np.int64 and got['local_query_index'].shape == (len(images), 2)
        np.testing.assert_array_equal(np.sort(got['local_query_index'], -1), np.sort(want['local_query_index'], -1))
        sa_scores = torch.from_numpy(got['sa_logits']).softmax(-1).numpy()
        assert np.abs(got['scores'] - sa_scores).max() > 0.01  # GLCA moves the prediction: it is in the graph


def test_sa_only_export_matches_sa_only_inference(tool, trained, unseen_images, capsys):
    config, checkpoint = trained
    tool.main([str(config), str(checkpoint), '--sa-only'])  # default path: beside the checkpoint
    assert 'outputs scores, sa_logits, opset 18' in capsys.readouterr().out
    onnx_file = checkpoint.with_name('model_sa-only.onnx')
    for images, samples in unseen_batches(unseen_images):
        got = run_onnx(onnx_file, images)
        want = pytorch_reference(config, checkpoint, samples, sa_only=True)
        assert list(got) == ['scores', 'sa_logits']
        np.testing.assert_allclose(got['scores'], want['scores'], atol=1e-4, rtol=0)
        np.testing.assert_allclose(got['sa_logits'], want['sa_logits'], atol=1e-4, rtol=1e-5)


@pytest.mark.slow
def test_a_bfloat16_checkpoint_is_exported_in_float32_and_says_so(tool, trained, unseen_images, tmp_path, capsys):
    """A bfloat16 model's weights, cast to float32, give the float32 model's predictions of those weights."""
    config, checkpoint = trained
    saved = torch.load(checkpoint, weights_only=False)
    bf16_checkpoint = tmp_path / 'model_bf16.pth'
    torch.save(dict(saved, state_dict={key: value.bfloat16() if value.is_floating_point() else value
                                       for key, value in saved['state_dict'].items()}), bf16_checkpoint)
    onnx_file = tmp_path / 'dcal_bf16.onnx'
    tool.main([str(config), str(bf16_checkpoint), '--out', str(onnx_file)])
    printed = capsys.readouterr().out
    assert "exporting in float32: the checkpoint's bfloat16 weights are cast to float32" in printed
    assert 'local_query_index the same top-R in 3/3 images' in printed
    images, samples = unseen_batches(unseen_images)[0]
    got, want = run_onnx(onnx_file, images), pytorch_reference(config, bf16_checkpoint, samples)
    for name in ('scores', 'sa_logits', 'glca_logits'):
        np.testing.assert_allclose(got[name], want[name], atol=1e-4, rtol=1e-5, err_msg=name)


def test_bad_input_is_refused_with_what_is_wrong(tool, trained, tmp_path, capsys):
    config, checkpoint = trained
    cases = [
        ([tmp_path / 'missing.py', checkpoint], f'config not found: {tmp_path / "missing.py"}'),
        ([config, tmp_path / 'missing.pth'], f'checkpoint not found: {tmp_path / "missing.pth"}'),
        ([config, checkpoint, '--cfg-options', 'model.backbone.depth=3'],
         f'{checkpoint} does not fit the model of {config}: The model and loaded state dict do not match'),
        ([config, checkpoint, '--cfg-options', 'model.backbone.query_selection=random'],
         "query_selection='random' draws GLCA's queries at random"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit, match=re.escape(message)):
            tool.main([*map(str, argv), '--out', str(tmp_path / 'refused.onnx')])
    with pytest.raises(SystemExit):
        tool.main([str(config), str(checkpoint), '--opset', '17'])
    assert "--opset 17: torch's exporter writes opset 18 and later" in capsys.readouterr().err
    assert not list(tmp_path.glob('*.onnx'))


def test_the_check_says_it_skipped_without_onnxruntime(tool, monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # import onnxruntime raises ImportError
    assert tool.check_with_onnxruntime(None, None, ()).startswith('onnxruntime is not installed: skipped the check')
