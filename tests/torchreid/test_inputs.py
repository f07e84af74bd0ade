"""VeRi-776 and MSMT17 train + val reading, and one clear error for each kind of bad input."""
import pytest
import torch

torchreid = pytest.importorskip('torchreid')

from dcal_plugin.layouts import VERI_IMAGE_DIRS, VERI_NAME_LISTS  # noqa: E402
from dcal_plugin.torchreid import MSMT17TrainVal, VeRi776, build_datamanager, build_engine  # noqa: E402
from dcal_plugin.torchreid.engine import DCALEngine  # noqa: E402

from .helpers import tiny_config  # noqa: E402


def test_veri776_reads_ids_and_cameras_from_the_names_and_relabels_train_ids(veri_data):
    dataset = VeRi776(root=str(veri_data.root), mode='query')
    records = {split: sorted((str(r.path), r.label, r.camera) for r in veri_data.split(split))
               for split in ('train', 'query', 'gallery')}
    train_ids = sorted({label for _, label, _ in records['train']})
    relabelled = sorted((path, train_ids.index(label), camera) for path, label, camera in records['train'])
    assert sorted(item[:3] for item in dataset.train) == relabelled
    assert sorted(item[:3] for item in dataset.query) == records['query']
    assert sorted(item[:3] for item in dataset.gallery) == records['gallery']
    assert {item[1] for item in dataset.train} == set(range(6)) and min(train_ids) > 0


def test_veri776_is_registered_with_torchreid(veri_data):
    dataset = torchreid.data.datasets.init_image_dataset('veri776', root=str(veri_data.root), mode='gallery')
    assert isinstance(dataset, VeRi776) and len(dataset) == 16


@pytest.mark.parametrize('missing', [VERI_IMAGE_DIRS['query'], VERI_NAME_LISTS['gallery']])
def test_a_missing_folder_or_name_list_is_named(veri_copy, missing):
    target = veri_copy / missing
    if target.is_dir():
        for path in target.iterdir():
            path.unlink()
        target.rmdir()
    else:
        target.unlink()
    with pytest.raises(FileNotFoundError, match=f'{missing} not found'):
        VeRi776(root=str(veri_copy.parent))


def test_an_unparsable_file_name_is_named(veri_copy):
    name_list = veri_copy / VERI_NAME_LISTS['train']
    names = name_list.read_text().splitlines()
    names[3] = 'car_0002_c002.jpg'
    name_list.write_text('\n'.join(names))
    with pytest.raises(ValueError, match=rf"cannot parse 'car_0002_c002.jpg' in .*{name_list.name}"):
        VeRi776(root=str(veri_copy.parent))


def test_a_listed_image_that_is_absent_is_named(veri_copy):
    name = (veri_copy / VERI_NAME_LISTS['query']).read_text().split()[0]
    (veri_copy / VERI_IMAGE_DIRS['query'] / name).unlink()
    with pytest.raises(FileNotFoundError, match=f"{name} is listed in .*{VERI_NAME_LISTS['query']}"):
        VeRi776(root=str(veri_copy.parent))


def test_a_query_identity_absent_from_the_gallery_stops_the_engine(veri_copy, tmp_path):
    query_id = (veri_copy / VERI_NAME_LISTS['query']).read_text().split()[0][:4]
    gallery_list = veri_copy / VERI_NAME_LISTS['gallery']
    gallery = [name for name in gallery_list.read_text().split() if not name.startswith(query_id)]
    gallery_list.write_text('\n'.join(gallery))
    with pytest.raises(ValueError,
                       match=rf'veri776: query identities \[{int(query_id)}\] have no image in the gallery'):
        build_engine(tiny_config(veri_copy.parent, 'veri776', tmp_path))


def test_a_batch_without_two_images_per_identity_stops_the_triplet_loss(veri_data, tmp_path):
    engine = build_engine(tiny_config(veri_data.root, 'veri776', tmp_path))
    batch = {'img': torch.randn(4, 3, 32, 32), 'pid': torch.tensor([0, 0, 1, 2])}
    with pytest.raises(ValueError, match=r'>= 2 images each, got images per identity \{0: 2, 1: 1, 2: 1\}.*'
                                         'RandomIdentitySampler'):
        engine.forward_backward(batch)
    engine.weight_t = 0.0  # no triplet loss: any batch of >= 2 images trains
    assert engine.forward_backward(batch)['loss'] > 0


def test_rank_beyond_the_gallery_fails_before_training(veri_data, tmp_path):
    with pytest.raises(ValueError, match=r'Rank-20, but veri776\'s gallery gives CMC up to Rank-15'):
        build_engine(tiny_config(veri_data.root, 'veri776', tmp_path, 'test.ranks', [1, 20]))


def test_engine_needs_a_scheduler_and_matching_classes(veri_data, tmp_path):
    engine = build_engine(tiny_config(veri_data.root, 'veri776', tmp_path))
    with pytest.raises(ValueError, match='pass a scheduler'):
        DCALEngine(engine.datamanager, engine.model, engine.optimizer, scheduler=None)
    engine.model.num_classes = 7
    with pytest.raises(ValueError, match='7 ID classes but the training set has 6'):
        DCALEngine(engine.datamanager, engine.model, engine.optimizer, scheduler=engine.scheduler)


def test_msmt17_trainval_trains_on_the_train_and_val_lists_and_tests_as_torchreids_msmt17(msmt_data, tmp_path):
    records = {split: sorted((str(r.path), r.label, r.camera) for r in msmt_data.split(split))
               for split in ('train', 'val', 'query', 'gallery')}
    assert records['val'] and {label for _, label, _ in records['val']} <= {label for _, label, _ in records['train']}
    dataset = torchreid.data.datasets.init_image_dataset('msmt17_trainval', root=str(msmt_data.root), verbose=False)
    assert isinstance(dataset, MSMT17TrainVal)
    assert sorted(item[:3] for item in dataset.train) == sorted(records['train'] + records['val'])
    assert sorted(item[:3] for item in dataset.query) == records['query']
    assert sorted(item[:3] for item in dataset.gallery) == records['gallery']
    # torchreid's msmt17 trains on the train list only, and its combineall adds val, query and gallery
    stock = torchreid.data.datasets.init_image_dataset('msmt17', root=str(msmt_data.root), verbose=False)
    assert sorted(item[:3] for item in stock.train) == records['train']
    combined = torchreid.data.datasets.init_image_dataset('msmt17', root=str(msmt_data.root), verbose=False,
                                                          combineall=True)
    assert len(combined.train) == sum(len(items) for items in records.values())

    cfg = tiny_config(msmt_data.root, 'msmt17', tmp_path, 'data.sources', ['msmt17_trainval'])
    datamanager = build_datamanager(cfg)
    assert datamanager.num_train_pids == 6 and len(datamanager.train_loader.dataset) == 24 + len(records['val'])
    assert list(datamanager.test_dataset) == ['msmt17']
