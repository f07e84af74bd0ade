"""DCAL (Dual Cross-Attention Learning, CVPR 2022) for MMPretrain and torchreid on timm backbones."""
