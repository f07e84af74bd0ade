"""DeviceMeters: a train step's scalars summed where they were computed, read to the host only at logging steps."""
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor


class DeviceMeters:
    """Sums of named scalar tensors over steps, kept on their device: adding a step waits for nothing.

    Reading (one device-to-host copy) gives each name's mean over the steps added since the last
    read and, if any value was NaN or infinite, the first such step with the values of that step
    that were not finite. Every step must add the same names.
    """

    def __init__(self) -> None:
        self.names: List[str] = []
        self.sums: Optional[Tensor] = None  # [M] float32
        self.first_bad_step: Optional[Tensor] = None  # [M], -1 where every value so far was finite
        self.first_bad_value: Optional[Tensor] = None  # [M], the value at that step
        self.steps = 0

    def add(self, values: Dict[str, Tensor], step: int) -> None:
        """Add one step's scalars ``{name: [] tensor}`` (all on one device), numbered ``step``."""
        stacked = torch.stack([value.detach().float().reshape(()) for value in values.values()])
        if self.sums is None:
            self.names = list(values)
            self.sums = torch.zeros_like(stacked)
            self.first_bad_step = torch.full_like(stacked, -1.0)
            self.first_bad_value = torch.zeros_like(stacked)
        first = ~torch.isfinite(stacked) & (self.first_bad_step < 0)
        self.first_bad_step = torch.where(first, float(step), self.first_bad_step)
        self.first_bad_value = torch.where(first, stacked, self.first_bad_value)
        self.sums = self.sums + stacked
        self.steps += 1

    def read(self) -> Tuple[Dict[str, float], Optional[Tuple[int, Dict[str, float]]]]:
        """Means since the last read and ``(first step, {name: value})`` of the non-finite values (or None); resets."""
        host = torch.cat([self.sums / self.steps, self.first_bad_step, self.first_bad_value]).tolist()
        names, count = self.names, len(self.names)
        self.__init__()
        means = dict(zip(names, host[:count]))
        bad_steps = [int(step) for step in host[count:2 * count] if step >= 0]
        if not bad_steps:
            return means, None
        first = min(bad_steps)
        return means, (first, {name: value for name, step, value in
                               zip(names, host[count:2 * count], host[2 * count:]) if step == first})
