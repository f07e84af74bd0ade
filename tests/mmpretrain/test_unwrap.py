"""unwrap: the model inside mmengine's wrappers, the model itself otherwise."""
from torch import nn

from dcal_plugin.mmpretrain.unwrap import unwrap


def test_unwrap_takes_the_module_out_of_a_wrapper_only():
    model = nn.Linear(2, 2)
    assert unwrap(nn.DataParallel(model)) is model  # a wrapper mmengine knows (its MODEL_WRAPPERS)
    assert unwrap(model) is model
    container = nn.Module()
    container.module = model  # a submodule named like a wrapper's, but no wrapper
    assert unwrap(container) is container
