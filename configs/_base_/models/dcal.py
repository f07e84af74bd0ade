# DCAL classifier: timm ViT backbone with SA / GLCA / PWCA branches, uncertainty-weighted cross-entropy.
custom_imports = dict(imports=['dcal_plugin.mmpretrain'], allow_failed_imports=False)

model = dict(
    type='DCALClassifier',  # ImageClassifier whose head follows the backbone's use_glca
    backbone=dict(
        type='DCALVisionTransformer',
        model_name='vit_base_patch16_224',
        checkpoint_path=None,  # a local timm checkpoint file; set by the architecture bases
        img_size=448,
        local_query_ratio=0.1,  # R = 10% of the patches for FGVC (METHOD §7)
        glca_block_index=-1,
        drop_path_rate=0.1,  # stochastic depth: used by the paper, rate not given [ours]
    ),
    head=dict(
        type='DCALClsHead',
        num_classes=200,
        in_channels=768,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
    ),
)
