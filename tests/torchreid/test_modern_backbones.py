"""The ViTs beyond the paper train and test through DCALEngine on the digits data in the VeRi-776 layout."""
import numpy as np
import pytest

pytest.importorskip('torchreid')

import dcal_plugin.torchreid as dcal_torchreid  # noqa: E402

from .helpers import tiny_config  # noqa: E402


@pytest.mark.parametrize('name', ['dcal_dinov2_small_reg4', 'dcal_clip_base', 'dcal_deit_tiny_distilled'])
def test_trains_and_tests_through_the_engine(veri_data, tmp_path, name):
    cfg = tiny_config(veri_data.root, 'veri776', tmp_path / 'log', 'model.name', name)
    results = dcal_torchreid.run(cfg)
    for branches in results.values():
        for result in branches.values():
            assert 0 <= result.mAP <= 1 and np.isfinite(result.mAP)
    assert (tmp_path / 'log' / 'model' / 'model.pth.tar-1').is_file()
