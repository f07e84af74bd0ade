"""The model inside mmengine's wrappers (DDP, FSDP, DataParallel and the like): one home for the unwrapping."""
from mmengine.model import is_model_wrapper
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """``model.module`` when ``model`` is an mmengine model wrapper, else ``model`` itself."""
    return model.module if is_model_wrapper(model) else model
