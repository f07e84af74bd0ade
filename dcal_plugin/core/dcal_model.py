"""``DCALModel``: what every DCAL model around a timm backbone shares: building, options, weights, PWCA partners."""
import inspect
from typing import Any, Callable, Dict, Optional, Tuple, Union

import timm
import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from .checkpoint import check_fits, load_timm_checkpoint, load_timm_state_dict
from .pretrained import SUPPORTED_MODELS, create_timm_model
from .rollout import num_local_queries

DERANGEMENT_DRAWS = 64  # permutations drawn at once for a PWCA partner assignment
QUERY_SELECTIONS = ('rollout', 'random')
# torch.profiler label of the forward's class-token rollout and top-R selection (benchmarks time it by this name)
ROLLOUT_LABEL = 'dcal_rollout_and_selection'


class DCALModel(nn.Module):
    """Base of the DCAL models: the timm backbone is ``self.vit`` (the SA branch, timm's parameter names).

    Subclasses take the backbone first, then their DCAL options with defaults (:meth:`option_defaults`),
    and implement ``forward(x, distractor_index=None) -> DCALOutput``. A GLCA branch, where a
    subclass has one, is ``glca_block``/``glca_norm``/``glca_head`` and :meth:`_copy_sa_into_glca`
    sets it from SA's weights after every timm load.
    """

    vit: nn.Module
    use_glca: bool = False

    @classmethod
    def from_timm(
            cls,
            model_name: str,
            checkpoint_path: Optional[str] = None,
            img_size: Optional[Union[int, Tuple[int, int]]] = None,
            num_classes: int = 0,
            drop_path_rate: float = 0.0,
            pretrained: Union[bool, str] = False,
            **kwargs,
    ) -> 'DCALModel':
        """Build timm's ``model_name`` (optionally at ``img_size``, int or ``(H, W)``) with its weights, wrap it.

        Weights: ``pretrained=True`` loads timm's pretrained weights of the paper's FGVC tag
        (:data:`PAPER_PRETRAINED_TAGS`; timm's default tag for other models), a string names the
        tag (e.g. ``'augreg2_in21k_ft_in1k'``); timm downloads them through its Hugging Face hub
        mechanism into the hub cache, and resizes the position embeddings to ``img_size``.
        ``checkpoint_path`` loads a local file instead. ``kwargs`` named like an option of the
        class (``local_query_ratio``, ``query_selection``, ...) go to it; the others to
        ``timm.create_model`` (e.g. ``depth``).
        """
        if not timm.is_model(model_name):
            close = timm.list_models(f'*{model_name.split("_")[0]}*')[:8]
            raise ValueError(f'unknown timm model {model_name!r}; tested: {", ".join(SUPPORTED_MODELS)}; '
                             f'similar timm names: {", ".join(close) or "none"}')
        options = cls.option_defaults()
        dcal_kwargs = {name: kwargs.pop(name) for name in list(kwargs) if name in options}
        if img_size is not None:
            kwargs['img_size'] = img_size
        if pretrained and checkpoint_path is not None:
            raise ValueError('give either pretrained (timm\'s hub weights) or checkpoint_path (a local file), not both')
        vit = create_timm_model(model_name, pretrained, num_classes=num_classes, drop_path_rate=drop_path_rate,
                                 **kwargs)
        model = cls(vit, **dcal_kwargs)
        if checkpoint_path is not None:
            model.load_timm_checkpoint(checkpoint_path)
        return model

    @classmethod
    def option_defaults(cls) -> Dict[str, Any]:
        """DCAL's options, the arguments of ``__init__`` after the backbone, with their defaults."""
        parameters = list(inspect.signature(cls.__init__).parameters.values())[2:]
        return {parameter.name: parameter.default for parameter in parameters}

    def _keep_options(self, vit: nn.Module, options: Dict[str, Any]) -> None:
        """Keep the backbone as ``vit`` and each DCAL option in ``options`` (the caller's ``locals()``) as an attribute.

        Checks what the families share: ``query_selection`` and ``local_query_ratio`` (R of the
        backbone's patches); ``grad_checkpointing`` is set through timm's switch.
        """
        values = {name: options[name] for name in self.option_defaults()}
        if values.get('query_selection', QUERY_SELECTIONS[0]) not in QUERY_SELECTIONS:
            raise ValueError(f'query_selection must be one of {QUERY_SELECTIONS}, got {values["query_selection"]!r}')
        if 'local_query_ratio' in values:
            num_local_queries(vit.patch_embed.num_patches, values['local_query_ratio'])
        self.vit = vit
        for name, value in values.items():
            if name != 'grad_checkpointing':
                setattr(self, name, value)
        self.set_grad_checkpointing(values['grad_checkpointing'])

    @property
    def grad_checkpointing(self) -> bool:
        """Whether blocks recompute their activations in the backward pass (timm's flag on ``vit``)."""
        return self.vit.grad_checkpointing

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Switch activation checkpointing of every stream on or off, as timm's ``set_grad_checkpointing``."""
        self.vit.set_grad_checkpointing(enable)

    @property
    def architecture(self) -> str:
        """timm's model name of the backbone."""
        return self.vit.pretrained_cfg['architecture']

    def load_timm_checkpoint(self, checkpoint_path: str) -> None:
        """Load a timm checkpoint file into the SA branch (see ``load_timm_checkpoint``), then re-copy GLCA from it."""
        load_timm_checkpoint(self.vit, checkpoint_path, self.architecture)
        self._copy_sa_into_glca()

    def load_timm_state_dict(self, state_dict: Dict[str, Tensor], source: str = 'state_dict') -> None:
        """Load a timm state_dict into the SA branch (see ``load_timm_state_dict``), then re-copy GLCA from it."""
        load_timm_state_dict(self.vit, state_dict, self.architecture, source)
        self._copy_sa_into_glca()

    def load_dcal_state_dict(self, state_dict: Dict[str, Tensor], source: str = 'state_dict') -> None:
        """Load a DCAL state_dict (``vit.*``, ``glca_*``), SA's position embeddings resized as a timm file's.

        A classifier of another shape (another label set, or none) is dropped for GLCA as for SA, and
        GLCA's then starts as a copy of SA's; GLCA's other weights must fit exactly (they hold no
        size-dependent tensor). Any other difference raises one ``ValueError`` naming ``source`` and
        the keys, and the model is changed only when all fits.
        """
        sa_state = {key[len('vit.'):]: value for key, value in state_dict.items() if key.startswith('vit.')}
        expected = {key: value for key, value in self.state_dict().items() if not key.startswith('vit.')}
        glca_state = {key: value for key, value in state_dict.items() if not key.startswith('vit.')
                      and not (key.startswith('glca_head.') and (key not in expected
                                                                 or value.shape != expected[key].shape))}
        classifier_kept = all(key in glca_state for key in expected if key.startswith('glca_head.'))
        check_fits(glca_state, {key: value for key, value in expected.items()
                                if classifier_kept or not key.startswith('glca_head.')},
                   f'DCAL checkpoint {source} does not match the GLCA branch')
        load_timm_state_dict(self.vit, sa_state, self.architecture, source)
        self.load_state_dict(glca_state, strict=False)
        if self.use_glca and not classifier_kept:
            self.glca_head.load_state_dict(self.vit.head.state_dict())

    def _copy_sa_into_glca(self) -> None:
        """Set GLCA's weights to copies of the SA weights it starts from (nothing to do without GLCA)."""

    def _checkpointed(self, block_function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``block_function(*args, **kwargs)``, under activation checkpointing when it is on and autograd records."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block_function, *args, use_reentrant=False, **kwargs)
        return block_function(*args, **kwargs)

    def _classify(self, head: nn.Module, feature: Tensor) -> Optional[Tensor]:
        """Logits ``[B, K]`` of a classifier, or None when the model has no classes."""
        return head(feature) if self.vit.num_classes > 0 else None


def pwca_partner(batch: int, distractor_index: Optional[Tensor], device: torch.device) -> Tensor:
    """Each image's PWCA distractor ``[B]``: validated, or drawn uniformly among the derangements of the batch."""
    if batch < 2:
        raise ValueError('PWCA pairs each image with another image of its mini-batch: train mode needs a '
                         f'batch of at least 2 images, got {batch} (use model.eval() for inference)')
    if distractor_index is None:
        return random_derangement(batch, device)
    if distractor_index.shape != (batch,) or distractor_index.dtype != torch.long:
        raise ValueError(f'distractor_index must be a LongTensor [{batch}], got '
                         f'{distractor_index.dtype} {tuple(distractor_index.shape)}')
    if bool(((distractor_index < 0) | (distractor_index >= batch)).any()):
        raise ValueError(f'distractor_index values must lie in [0, {batch - 1}]')
    if bool((distractor_index == torch.arange(batch, device=distractor_index.device)).any()):
        raise ValueError('distractor_index pairs an image with itself; PWCA needs another image')
    return distractor_index.to(device)


def random_derangement(size: int, device: Optional[torch.device] = None) -> Tensor:
    """A permutation ``[size]`` of ``0..size-1`` without fixed points, uniform among all such (rejection sampling).

    ``DERANGEMENT_DRAWS`` uniform permutations are drawn at once (float64 keys sorted, from torch's
    generator of ``device``) and the first without a fixed point is taken, with no data-dependent
    Python branch (so that ``torch.compile`` traces it whole). A permutation has none with
    probability at least 1/3, so all draws fail with probability below 1e-11; then the cyclic shift
    ``i -> i - 1`` is returned.
    """
    if size < 2:
        raise ValueError(f'a permutation without fixed points needs at least 2 elements, got {size}')
    identity = torch.arange(size, device=device)
    orders = torch.rand(DERANGEMENT_DRAWS, size, dtype=torch.float64, device=device).argsort(dim=-1)
    valid = (orders != identity).all(dim=-1)
    first = orders.index_select(0, valid.int().argmax().reshape(1))[0]  # argmax: the first valid draw
    return torch.where(valid.any(), first, identity.roll(1))
