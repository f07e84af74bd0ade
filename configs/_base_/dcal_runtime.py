# mmpretrain's runtime with DCAL's hooks, metrics and logging.
_base_ = ['mmpretrain::_base_/default_runtime.py']

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    # mmengine's CheckpointHook whose files a crash cannot corrupt or lose, and whose resume keeps the true best
    checkpoint=dict(type='DCALCheckpointHook', interval=1, max_keep_ckpts=3, save_best='accuracy/top1'),
)
custom_hooks = [
    dict(type='WorkDirLockHook'),  # one training run per work dir
    # missing or corrupt images, num_classes that does not fit the data, an epoch ending in a batch of 1: before
    # the first iteration
    dict(type='DatasetCheckHook'),
    dict(type='EpochSeedHook'),  # a resumed run repeats the uninterrupted one
    dict(type='NonFiniteLossHook'),  # a run stops at its first NaN/inf loss, weight or optimizer state, unsaved
    dict(type='PlainCheckpointHook'),  # checkpoints any weights_only=True loader reads
    dict(type='AttentionRolloutHook', interval=10, num_images=4),
]

randomness = dict(seed=0)

# mmengine's Runner with a unique experiment name per run (several runs in one process); Runner.from_cfg, which
# ignores runner_type, trains and resumes these configs the same (see dcal_plugin/mmpretrain/runner.py)
runner_type = 'DCALRunner'
