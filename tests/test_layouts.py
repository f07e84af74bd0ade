"""The layout constants are the official ones where no toolbox reader checks them (VeRi-776 is read by our own reader).

Spelled here from VeRi-776's release (Liu et al., ICME 2016): ``VeRi/image_{train,query,test}/``,
``name_{train,query,test}.txt``, file names such as ``0002_c002_00030600_0.jpg``.
"""
from dcal_plugin.demo_data import build_demo_data
from dcal_plugin.layouts import VERI_FILE_REGEX

OFFICIAL_VERI = ('VeRi/image_train', 'VeRi/image_query', 'VeRi/image_test',
                 'VeRi/name_train.txt', 'VeRi/name_query.txt', 'VeRi/name_test.txt')


def test_the_veri776_demo_data_has_the_official_folders_lists_and_file_names(tmp_path):
    data = build_demo_data(tmp_path, 'veri776', num_train_ids=2, images_per_train_id=2, num_test_ids=2,
                           gallery_per_test_id=1, num_cameras=2, image_size=16, digit_scale=(0.5, 0.5))
    assert data.root == tmp_path.resolve()
    for relative in OFFICIAL_VERI:
        assert (tmp_path / relative).exists(), relative
    query = (tmp_path / 'VeRi/name_query.txt').read_text().split()
    assert query and all((tmp_path / 'VeRi/image_query' / name).is_file() for name in query)
    match = VERI_FILE_REGEX.match('0002_c002_00030600_0.jpg')
    assert (match['vehicle'], match['camera'], match['frame'], match['index']) == ('0002', '002', '00030600', '0')
