"""The precision a tool runs a trained model in: float32, bfloat16 weights, or float32 weights under autocast."""
import argparse
from typing import ContextManager

import torch
from torch import nn

PRECISIONS = ('float32', 'bfloat16', 'amp-bfloat16')


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """``--precision`` of a tool: one of :data:`PRECISIONS`, float32 by default."""
    parser.add_argument('--precision', choices=PRECISIONS, default='float32',
                        help='float32 (default); bfloat16: the model cast to bfloat16; amp-bfloat16: float32 weights '
                             'under torch.autocast in bfloat16. Attention maps and rollout are float32 in every case')


def run_in_precision(model: nn.Module, precision: str) -> ContextManager:
    """The context to run ``model`` in: autocast for ``'amp-bfloat16'``; ``model`` is cast in place for
    ``'bfloat16'``."""
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {PRECISIONS}, got {precision!r}')
    if precision == 'bfloat16':
        model.to(torch.bfloat16)
    device_type = next(model.parameters()).device.type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == 'amp-bfloat16')
