"""recipe_schedule: a yaml config's optimizer groups and per-epoch lr, as torchreid's engine trains with them."""
import pytest

pytest.importorskip('torchreid')

from dcal_plugin.torchreid import build_engine  # noqa: E402
from dcal_plugin.torchreid.config import engine_run_kwargs  # noqa: E402
from dcal_plugin.torchreid.recipe_schedule import recipe_schedule, stand_in_model  # noqa: E402

from .helpers import tiny_config  # noqa: E402


def group_settings(optimizer):
    """Each parameter group's (lr, weight decay), sorted."""
    return sorted((round(group['lr'], 12), group['weight_decay']) for group in optimizer.param_groups)


def test_the_stand_in_steps_the_engines_lr_with_the_engines_groups(veri_data, tmp_path):
    """Warm-up then cosine over 4 epochs, biases at lr x 2 (TransReID): the lr of every group before every epoch."""
    cfg = tiny_config(veri_data.root, 'veri776', tmp_path, 'train.max_epoch', 4, 'train.warmup_epochs', 1)
    engine = build_engine(cfg)
    seen = []
    update_lr = engine.update_lr

    def record_then_update_lr(*args, **kwargs):
        seen.append(group_settings(engine.optimizer))
        update_lr(*args, **kwargs)

    engine.update_lr = record_then_update_lr
    engine.run(**engine_run_kwargs(cfg))
    schedule = recipe_schedule(cfg, stand_in_model(cfg), epoch_length=len(engine.train_loader))
    simulated = []
    for _ in range(schedule.epochs):
        simulated.append(group_settings(schedule.optimizer))
        schedule.step_epoch()
    assert schedule.epochs == 4 and simulated == seen
    assert len(seen[0]) == 3 and seen[-1][2][0] == pytest.approx(2 * seen[-1][0][0])  # the bias group at lr x 2
