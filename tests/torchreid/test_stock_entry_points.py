"""torchreid's own entry points on DCAL models: FeatureExtractor on a saved checkpoint, its engines, its image size."""
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

torchreid = pytest.importorskip('torchreid')

from dcal_plugin.torchreid import DCALEngine, build_dcal_reid, build_engine  # noqa: E402

from .helpers import TINY_MODEL, tiny_config  # noqa: E402

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # FeatureExtractor's defaults


def saved_dcal_deit_tiny(path, num_classes=6, seed=0):
    """A ``dcal_deit_tiny`` with non-trivial BNNecks, saved as torchreid's engine saves it; returns the model."""
    torch.manual_seed(seed)
    model = torchreid.models.build_model('dcal_deit_tiny', num_classes=num_classes, pretrained=False)
    with torch.no_grad():
        for neck in (model.sa_bnneck, model.glca_bnneck):
            neck.weight.uniform_(0.5, 1.5)
            neck.running_mean.normal_()
    torch.save({'state_dict': model.state_dict(), 'epoch': 3, 'rank1': 0.25}, path)
    return model.eval()


def preprocess(paths, size=(256, 128)):
    """``[N, 3, H, W]``: PIL's bilinear resize, [0, 1], ImageNet normalisation (FeatureExtractor's documented transform)."""
    images = [TF.to_tensor(Image.open(path).convert('RGB').resize(size[::-1], Image.BILINEAR)) for path in paths]
    return TF.normalize(torch.stack(images), IMAGENET_MEAN, IMAGENET_STD)


def test_feature_extractor_reads_a_saved_dcal_checkpoint_and_returns_its_retrieval_feature(veri_data, tmp_path):
    checkpoint = tmp_path / 'model.pth.tar-3'
    trained = saved_dcal_deit_tiny(checkpoint)
    paths = [str(record.path) for record in veri_data.split('query')[:3]]
    extractor = torchreid.utils.FeatureExtractor(
        model_name='dcal_deit_tiny', model_path=str(checkpoint), device='cpu', verbose=False)
    features = extractor(paths)
    with torch.no_grad():
        want = trained(preprocess(paths))
    assert features.shape == (3, 2 * trained.feature_dim)
    torch.testing.assert_close(features, want, rtol=1e-4, atol=1e-4)


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
