"""The paper's supplementary Swin-T row through torchreid: PWCA only, trained and tested by DCALEngine on the digits
data in the MSMT17 layout (two stages, small images)."""
import numpy as np
import pytest

pytest.importorskip('torchreid')

import dcal_plugin.torchreid as dcal_torchreid  # noqa: E402

from .helpers import tiny_config  # noqa: E402

SWIN = dict(depths=(1, 1), num_heads=(3, 6), embed_dim=24, window_size=4)  # 8 x 8 tokens in 4 x 4 windows, then 4 x 4


def swin_config(msmt_data, tmp_path, *opts):
    cfg = tiny_config(msmt_data.root, 'msmt17', tmp_path / 'log', 'model.name', 'dcal_swin_tiny', *opts)
    cfg.model.timm_kwargs.clear()
    cfg.model.timm_kwargs.update(SWIN)
    return cfg


def test_swin_trains_pwca_only_and_tests_through_the_engine(msmt_data, tmp_path):
    cfg = swin_config(msmt_data, tmp_path, 'model.use_glca', False)
    engine = dcal_torchreid.build_engine(cfg)
    assert type(engine.model.dcal).__name__ == 'DCALSwin' and engine.model.feature_dim == 48
    engine.model.train()
    summary = engine.forward_backward(next(iter(engine.train_loader)))
    assert {'loss_sa', 'loss_pwca'} <= set(summary) and 'loss_glca' not in summary
    results = dcal_torchreid.run(swin_config(msmt_data, tmp_path / 'run', 'model.use_glca', False))
    for branches in results.values():
        for result in branches.values():
            assert 0 <= result.mAP <= 1 and np.isfinite(result.mAP)


def test_swin_with_glca_is_refused_naming_the_switch(msmt_data, tmp_path):
    with pytest.raises(ValueError, match='use_glca=False'):
        dcal_torchreid.build_engine(swin_config(msmt_data, tmp_path))
