"""Train and test DCAL Re-ID through torchreid's engine, as torchreid's scripts/main.py:
``python tools/train_reid.py --config-file configs/reid/NAME.yaml --root DATA [KEY VALUE ...]``; ``--help`` and the
code: dcal_plugin/torchreid/command.py.
"""
from dcal_plugin.torchreid.command import main

if __name__ == '__main__':
    main()
