"""``DCALOptimWrapperConstructor``: mmengine's default constructor, its parameter groups plain dicts for
``torch.compile``."""
import torch
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmpretrain.registry import OPTIM_WRAPPER_CONSTRUCTORS


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class DCALOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's ``DefaultOptimWrapperConstructor`` (``paramwise_cfg`` and all), with the groups as plain dicts.

    mmengine builds the optimizer from its config, so the groups ``paramwise_cfg`` makes reach it
    as ``ConfigDict``; mmengine's ``compile=True`` compiles ``train_step`` with the optimizer step
    inside, and torch's compiler cannot trace a ``ConfigDict`` group (``InternalTorchDynamoError:
    'UserDefinedDictVariable' object has no attribute 'items'``).
    """

    def __call__(self, model: torch.nn.Module) -> OptimWrapper:
        """The optimizer wrapper of ``model``, its optimizer's parameter groups converted to dicts."""
        optim_wrapper = super().__call__(model)
        groups = optim_wrapper.optimizer.param_groups
        groups[:] = [dict(group) for group in groups]
        return optim_wrapper
