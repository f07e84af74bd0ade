# The paper's FGVC recipe (METHOD §7): Adam, weight decay 0.05, lr 5e-4 / 512 x batch size, cosine, 100 epochs.
optim_wrapper = dict(
    constructor='DCALOptimWrapperConstructor',  # mmengine's default, compile=True-able (dcal_plugin/mmpretrain)
    optimizer=dict(type='Adam', lr=5e-4, weight_decay=0.05),
    # no decay on norms, biases, position embedding, class token and the loss weights [ours]
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={
            '.pos_embed': dict(decay_mult=0.0),
            '.cls_token': dict(decay_mult=0.0),
            'loss_weighting.log_vars': dict(decay_mult=0.0),
        }),
)

param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=5, convert_to_iter_based=True),  # warm-up [ours]
    dict(type='CosineAnnealingLR', T_max=95, by_epoch=True, begin=5, end=100),
]

train_cfg = dict(by_epoch=True, max_epochs=100, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# lr = 5e-4 x (total batch) / 512: on by default, so that the rule the paper states is the one applied
auto_scale_lr = dict(base_batch_size=512, enable=True)
