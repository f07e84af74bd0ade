"""``ForwardPlan``: what one ``DCALViT`` forward call runs, decided before its first block."""
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from .attention import MapRows


@dataclass(frozen=True)
class ForwardPlan:
    """The branches, the maps and GLCA's place of one forward call.

    Attributes:
        partner: ``[B]``, each image's PWCA distractor; None when no PWCA rows run (eval mode,
            ``use_pwca=False``). With a partner the token stream stacks ``[SA; PWCA]`` ``[2B, N, C]``.
        glca_block: the SA block GLCA runs beside, on the tokens entering it; None: no GLCA.
        rollout_blocks: SA blocks ``0..rollout_blocks-1`` hand their attention maps to the
            rollout, the last of them only its class token's row; 0 when GLCA's queries are
            random or there is no GLCA.
    """

    partner: Optional[Tensor] = None
    glca_block: Optional[int] = None
    rollout_blocks: int = 0

    @property
    def is_plain_vit(self) -> bool:
        """Whether the call is timm's own SA forward: no PWCA rows, no GLCA."""
        return self.partner is None and self.glca_block is None

    def map_rows(self, block_index: int) -> Optional[MapRows]:
        """The rows of block ``block_index``'s SA attention map the rollout reads, or None."""
        if block_index >= self.rollout_blocks:
            return None
        return MapRows.CLASS_TOKEN if block_index == self.rollout_blocks - 1 else MapRows.ALL

    def stack(self, tokens: Tensor) -> Tensor:
        """SA tokens ``[B, N, C]`` -> the stream the blocks run on: ``[SA; PWCA]`` ``[2B, N, C]`` with a partner."""
        return tokens if self.partner is None else torch.cat([tokens, tokens])

    def split(self, stream: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """The stream -> SA rows ``[B, N, C]`` and PWCA rows ``[B, N, C]`` (None without a partner)."""
        if self.partner is None:
            return stream, None
        sa, pwca = stream.chunk(2)
        return sa, pwca
