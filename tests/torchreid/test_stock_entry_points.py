"""torchreid's own entry points on DCAL models: FeatureExtractor on a saved checkpoint, its engines, its image size."""
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

torchreid = pytest.importorskip('torchreid')

from dcal_plugin.torchreid import (  # noqa: E402
    DCALEngine, build_dcal_reid, build_engine, build_optimizer, build_scheduler, use_transreid_train_transform)

from .helpers import TINY_MODEL, tiny_config  # noqa: E402

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # FeatureExtractor's defaults


@pytest.fixture(scope='module')
def stock_run(veri_data, tmp_path_factory):
    """(engine, checkpoint) of README's torchreid workflow: torchreid's data manager (with TransReID's train
    transform) and model factory, DCAL's optimizer, scheduler and DCALEngine, one epoch of ``dcal_deit_tiny`` at
    torchreid's default 256x128 with a test."""
    save_dir = tmp_path_factory.mktemp('stock') / 'log'
    datamanager = torchreid.data.ImageDataManager(
        root=str(veri_data.root), sources='veri776', height=256, width=128, batch_size_train=8, batch_size_test=16,
        workers=0, train_sampler='RandomIdentitySampler', num_instances=4, transforms=[])
    use_transreid_train_transform(datamanager)
    torch.manual_seed(0)
    model = torchreid.models.build_model('dcal_deit_tiny', num_classes=datamanager.num_train_pids, loss='triplet',
                                         pretrained=False)
    optimizer = build_optimizer(model, lr=0.008)
    scheduler = build_scheduler(optimizer, max_epoch=2, warmup_epochs=1)
    engine = DCALEngine(datamanager, model, optimizer, scheduler=scheduler, use_gpu=False)
    engine.run(save_dir=str(save_dir), max_epoch=1, print_freq=1, ranks=[1])
    return engine, save_dir / 'model' / 'model.pth.tar-1'


def preprocess(paths, size=(256, 128)):
    """``[N, 3, H, W]``: PIL's bilinear resize, [0, 1], ImageNet normalisation (FeatureExtractor's documented
    transform)."""
    images = [TF.to_tensor(Image.open(path).convert('RGB').resize(size[::-1], Image.BILINEAR)) for path in paths]
    return TF.normalize(torch.stack(images), IMAGENET_MEAN, IMAGENET_STD)


def test_feature_extractor_reads_a_dcal_engine_checkpoint_and_returns_its_retrieval_feature(stock_run, veri_data):
    engine, checkpoint = stock_run
    paths = [str(record.path) for record in veri_data.split('query')[:3]]
    extractor = torchreid.utils.FeatureExtractor(
        model_name='dcal_deit_tiny', model_path=str(checkpoint), device='cpu', verbose=False)
    features = extractor(paths)
    with torch.no_grad():
        want = engine.model.eval()(preprocess(paths))
    assert features.shape == (3, 2 * engine.model.feature_dim)
    torch.testing.assert_close(features, want, rtol=1e-4, atol=1e-4)


def test_feature_extractor_of_a_bfloat16_model_gives_float32_features_close_to_float32s(stock_run, veri_data):
    """Entries of unit-norm halves are at most 1, where a bfloat16 step is 2^-8 (8 bits): within four such steps.

    (Under bfloat16 autocast it gives float32 features too: torch's autocast computes the normalisation in float32.)
    """
    from dcal_plugin.precision import run_in_precision

    _, checkpoint = stock_run
    paths = [str(record.path) for record in veri_data.split('query')[:3]]
    extractor = torchreid.utils.FeatureExtractor(
        model_name='dcal_deit_tiny', model_path=str(checkpoint), device='cpu', verbose=False)
    want = extractor(paths)
    with run_in_precision(extractor.model, 'bfloat16'):
        features = extractor(paths)
    assert features.dtype == torch.float32
    torch.testing.assert_close(features, want, rtol=0, atol=2 ** -6)
    assert torch.cosine_similarity(features, want).min() > 0.999


@pytest.mark.parametrize('engine_name', ['ImageSoftmaxEngine', 'ImageTripletEngine'])
def test_torchreids_own_engines_fail_at_their_first_step_naming_dcal_engine(engine_name, veri_data, tmp_path):
    dcal = build_engine(tiny_config(veri_data.root, 'veri776', tmp_path))
    engine = getattr(torchreid.engine, engine_name)(
        dcal.datamanager, dcal.model, dcal.optimizer, scheduler=dcal.scheduler, use_gpu=False)
    with pytest.raises(TypeError, match=r'train it with dcal_plugin\.torchreid\.DCALEngine'):
        engine.run(save_dir=str(tmp_path / 'run'), max_epoch=1, print_freq=1)
    assert not (tmp_path / 'run' / 'model').exists()


def test_dcal_engine_refuses_a_data_manager_of_another_image_size(veri_data, tmp_path):
    datamanager = build_engine(tiny_config(veri_data.root, 'veri776', tmp_path, 'data.height', 64,
                                           'data.width', 64)).datamanager
    model = build_dcal_reid('deit_tiny_patch16_224', datamanager.num_train_pids, img_size=(32, 16), **TINY_MODEL)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    with pytest.raises(ValueError, match=r'yields 64x64 images but the model was built for 32x16.*img_size=\(64, 64\)'):
        DCALEngine(datamanager, model, optimizer, scheduler=scheduler, use_gpu=False)
