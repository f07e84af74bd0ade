"""DeviceMeters: means over the steps since the last read, and the first non-finite step with its values."""
import math

import torch

from dcal_plugin.torchreid.meters import DeviceMeters


def test_a_read_gives_the_means_since_the_last_read_and_the_first_non_finite_step():
    meters = DeviceMeters()
    meters.add({'loss': torch.tensor(1.0), 'w': torch.tensor(0.5)}, step=0)
    meters.add({'loss': torch.tensor(3.0), 'w': torch.tensor(1.5)}, step=1)
    assert meters.read() == ({'loss': 2.0, 'w': 1.0}, None)
    meters.add({'loss': torch.tensor(1.0), 'w': torch.tensor(1.0)}, step=2)
    meters.add({'loss': torch.tensor(float('nan')), 'w': torch.tensor(1.0)}, step=3)
    meters.add({'loss': torch.tensor(float('nan')), 'w': torch.tensor(float('inf'))}, step=4)  # later: not the first
    means, (step, values) = meters.read()
    assert step == 3 and list(values) == ['loss'] and math.isnan(values['loss'])
    assert math.isnan(means['loss']) and means['w'] == float('inf')
    meters.add({'loss': torch.tensor(4.0), 'w': torch.tensor(2.0)}, step=5)
    assert meters.read() == ({'loss': 4.0, 'w': 2.0}, None)  # a read starts afresh
