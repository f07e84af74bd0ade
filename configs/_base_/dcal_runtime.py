# mmpretrain's runtime with DCAL's hooks, metrics and logging.
_base_ = ['mmpretrain::_base_/default_runtime.py']

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3, save_best='accuracy/top1'),
)
custom_hooks = [
    dict(type='DatasetCheckHook'),  # a listed image missing on disk fails before the first iteration
    dict(type='EpochSeedHook'),  # a resumed run repeats the uninterrupted one
    dict(type='NonFiniteLossHook'),  # a diverged run stops at its first NaN/inf loss, before a checkpoint of it
    dict(type='PlainCheckpointHook'),  # checkpoints any weights_only=True loader reads
    dict(type='AttentionRolloutHook', interval=10, num_images=4),
]

randomness = dict(seed=0)

# mmengine's Runner with a unique experiment name per run (several runs in one process); Runner.from_cfg, which
# ignores runner_type, trains and resumes these configs the same (see dcal_plugin/mmpretrain/runner.py)
runner_type = 'DCALRunner'
