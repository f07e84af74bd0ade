"""Train and test DCAL Re-ID through torchreid's engine, in the style of torchreid's scripts/main.py.

    python tools/train_reid.py --config-file configs/reid/dcal_deit-tiny_veri776.yaml --root DATA \\
        model.checkpoint checkpoints/deit_tiny_patch16_224.fb_in1k.pth [KEY VALUE ...]

Test only: ``test.evaluate True model.load_weights LOG/model/model.pth.tar-120``.
Resume: ``model.resume LOG/model/model.pth.tar-60``, or ``model.resume auto`` (the latest complete checkpoint).
Several GPUs: the model trains in ``nn.DataParallel`` over the visible GPUs (``CUDA_VISIBLE_DEVICES``), as in
torchreid's main.py; checkpoints keep the plain model's keys.
"""
from dcal_plugin.torchreid.command import main

if __name__ == '__main__':
    main()
