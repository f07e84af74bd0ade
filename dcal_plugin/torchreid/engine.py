"""DCALEngine: torchreid's triplet engine with DCAL's three branches, TransReID's losses, uncertainty weighting
(METHOD §5)."""
import contextlib
import os.path as osp
from typing import Dict, List, Optional, Tuple

import torch
import torchreid
from torch import Tensor, nn

from dcal_plugin.core import BRANCHES, check_finite, check_finite_state

from ..seeding import seed_epoch
from ..work_dir_lock import WorkDirLock
from .checkpoint import save_checkpoint
from .images import check_datamanager_images, images_read_or_named
from .losses import SoftMarginTripletLoss
from .evaluation import RankResult, score_branches
from .meters import DeviceMeters
from .model import DCALReID

AMP_DTYPES = (None, 'bfloat16', 'float16')  # mixed precision of the train step (float16 with a dynamic loss scale)
PARALLEL_WRAPPERS = (nn.DataParallel, nn.parallel.DistributedDataParallel)


class DCALEngine(torchreid.engine.ImageTripletEngine):
    """torchreid's ``ImageTripletEngine`` for :class:`DCALReID`; only ``forward_backward`` differs.

    Per step: the train forward runs SA, GLCA and PWCA (each image's PWCA partner is another
    image of the batch); each branch's loss is ``weight_x·CE(logits) + weight_t·triplet(feature)``,
    the ID loss on the logits after the branch's BNNeck and the triplet loss on its feature before
    it. The defaults are the losses of TransReID's ViT baseline, which the paper follows (METHOD §5;
    ``configs/{VeRi,MSMT17}/vit_base.yml`` of damo-cv/TransReID): cross-entropy without label
    smoothing (``IF_LABELSMOOTH: 'off'``) and the batch-hard triplet loss with a soft margin
    (``NO_MARGIN: True``, :class:`~dcal_plugin.torchreid.losses.SoftMarginTripletLoss`);
    ``margin=0.3, label_smooth=True`` give torchreid's hinge ``TripletLoss`` and smoothed
    cross-entropy instead. Where TransReID adds ID and triplet loss of its one branch, the three
    branch losses (or those not switched off) are combined by the model's ``loss_weighting``
    (DCAL's uncertainty weighting). The meters are the total and per-branch losses, the weights
    ``w_*`` = exp(-log_var) and the SA ID accuracy, kept on the device and read at torchreid's
    logging steps (no step waits for the device otherwise). The rest of that baseline lives with
    its pieces: the retrieval feature (:class:`DCALReID`: before BNNeck, L2-normalised), SGD with
    the biases' lr ×2 and weight decay 1e-4 (``build_optimizer``), the warm-up and cosine schedule
    (``build_scheduler``), the train transform (``transforms.use_transreid_train_transform``) and
    MSMT17's train + val lists (the dataset ``msmt17_trainval``). [ours] float32 unless
    ``amp_dtype`` is given (TransReID trains under float16 autocast), so that a CPU run and a GPU
    run compute the same thing by default.

    Construction fails with a clear message when the scheduler is None (torchreid's checkpoints
    need one), when the model's classes differ from the training identities or its image size
    from the data manager's ``height`` × ``width``, or when a query
    identity of a test set has no gallery image (torchreid's ``evaluate_rank`` would skip it
    silently). Arguments are those of ``ImageTripletEngine`` with TransReID's defaults
    (``margin=None``: the soft margin; ``label_smooth=False``), and ``amp_dtype``: the train
    forward under ``torch.autocast`` in ``'bfloat16'`` or ``'float16'`` (with a dynamic loss
    scale, ``torch.amp.GradScaler``), None for float32.

    Several GPUs, torchreid's way: ``model`` may be wrapped in ``nn.DataParallel`` (as torchreid's
    ``scripts/main.py`` wraps it) or ``DistributedDataParallel``, before the engine is built or
    after (``engine.model = nn.DataParallel(engine.model)``). The forward runs through the
    wrapper; the uncertainty weighting, the checks and the checkpoints use the plain model
    (:attr:`dcal_reid`), so checkpoints keep its keys (no ``module.`` prefix).

    Examples::

        engine = DCALEngine(datamanager, model, optimizer, scheduler=scheduler)  # see build_engine
        engine.run(save_dir='log/dcal', max_epoch=120, eval_freq=10, normalize_feature=True)
    """

    def __init__(self, datamanager, model: nn.Module, optimizer: torch.optim.Optimizer,
                 margin: Optional[float] = None, weight_t: float = 1.0, weight_x: float = 1.0, scheduler=None,
                 use_gpu: bool = True, label_smooth: bool = False, amp_dtype: Optional[str] = None,
                 seed: Optional[int] = None) -> None:
        if amp_dtype not in AMP_DTYPES:
            raise ValueError(f'amp_dtype must be one of {AMP_DTYPES}, got {amp_dtype!r}')
        dcal_reid = unwrap(model)
        if not isinstance(dcal_reid, DCALReID):
            raise TypeError('DCALEngine trains a DCALReID (see build_dcal_reid), plain or in nn.DataParallel or '
                            f'DistributedDataParallel, got {type(model).__name__} of {type(dcal_reid).__name__}')
        if scheduler is None:
            raise ValueError('torchreid saves scheduler.state_dict() with every checkpoint: pass a scheduler '
                             '(dcal_plugin.torchreid.build_scheduler or torchreid.optim.build_lr_scheduler)')
        if dcal_reid.num_classes != datamanager.num_train_pids:
            raise ValueError(f'the model has {dcal_reid.num_classes} ID classes but the training set has '
                             f'{datamanager.num_train_pids} identities')
        check_image_size(datamanager, dcal_reid)
        check_query_identities(datamanager.test_dataset)
        super().__init__(datamanager, model, optimizer, margin=margin, weight_t=weight_t, weight_x=weight_x,
                         scheduler=scheduler, use_gpu=use_gpu, label_smooth=label_smooth)
        self.register_model('model', dcal_reid, optimizer, scheduler)  # what torchreid saves: the plain keys
        if margin is None:  # torchreid's TripletLoss only has the hinge
            self.criterion_t = SoftMarginTripletLoss()
        self.batch_idx = 0  # torchreid's train loop sets it per step; a step called on its own is iteration 1
        self.amp_dtype = None if amp_dtype is None else getattr(torch, amp_dtype)
        device_type = dcal_reid.loss_weighting.log_vars.device.type
        self.grad_scaler = torch.amp.GradScaler(device_type) if amp_dtype == 'float16' else None
        self.meters = DeviceMeters()
        self.print_freq = 1  # train() sets torchreid's; a step called on its own returns its meters
        self.seed = seed
        self.branch_results: Dict[str, Dict[str, RankResult]] = {}  # each test set's branches, at the last test
        self._extracted: Optional[List[list]] = None  # [features, pids, camids] per batch while a test extracts

    @property
    def dcal_reid(self) -> DCALReID:
        """The :class:`DCALReID` that ``self.model`` is or wraps (``nn.DataParallel``, ``DistributedDataParallel``)."""
        return unwrap(self.model)

    def run(self, *args, **kwargs) -> None:
        """torchreid's ``run`` (same arguments), with the save dir locked and the images checked first.

        One run per ``save_dir`` (:class:`~dcal_plugin.work_dir_lock.WorkDirLock`, held by the main
        process); before the first step every image of the train, query and gallery sets is checked
        (``check_images``), and during the run an image that cannot be read raises an error naming
        it (torchreid's reader would retry it forever).
        """
        save_dir = kwargs.get('save_dir', args[0] if args else 'log')
        test_only = kwargs.get('test_only', False)
        main_process = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
        lock = WorkDirLock(save_dir) if main_process and not test_only else contextlib.nullcontext()
        with lock, images_read_or_named():
            if not test_only:
                check_datamanager_images(self.datamanager)
            super().run(*args, **kwargs)

    def _evaluate(self, dataset_name: str = '', query_loader=None, gallery_loader=None,
                  **kwargs) -> Tuple[float, float]:
        """torchreid's test of the retrieval feature; the features it extracts also score each branch.

        ``branch_results[dataset_name]`` then holds :func:`~dcal_plugin.torchreid.evaluation.score_branches`
        of them, with the test's distance, normalisation, metric and re-ranking: no second extraction.
        """
        self._extracted = []
        try:
            result = super()._evaluate(dataset_name=dataset_name, query_loader=query_loader,
                                       gallery_loader=gallery_loader, **kwargs)
            features, pids, camids = (torch.cat(column) for column in zip(*self._extracted))
        finally:
            self._extracted = None
        split = len(query_loader.dataset)
        self.branch_results[dataset_name] = score_branches(
            self.dcal_reid, (features[:split], pids[:split].numpy(), camids[:split].numpy()),
            (features[split:], pids[split:].numpy(), camids[split:].numpy()),
            kwargs.get('dist_metric', 'euclidean'), kwargs.get('normalize_feature', False),
            kwargs.get('use_metric_cuhk03', False), kwargs.get('rerank', False))
        return result

    def parse_data_for_eval(self, data: Dict[str, Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """torchreid's ``(imgs, pids, camids)``; during a test, the pids and camids are kept with the features."""
        imgs, pids, camids = super().parse_data_for_eval(data)
        if self._extracted is not None:
            self._extracted.append([None, torch.as_tensor(pids).cpu(), torch.as_tensor(camids).cpu()])
        return imgs, pids, camids

    def extract_features(self, input: Tensor) -> Tensor:
        """The model's eval feature ``[B, 2C]``; during a test, kept (on the CPU) with the batch's ids."""
        features = super().extract_features(input)
        if self._extracted is not None:
            self._extracted[-1][0] = features.detach().float().cpu()
        return features

    def train(self, print_freq: int = 10, fixbase_epoch: int = 0, open_layers: Optional[List[str]] = None) -> None:
        """torchreid's epoch, seeded from ``(seed, epoch)`` if a seed was given (a resumed run repeats the uninterrupted
        one).

        The meters are read from the device every ``print_freq`` steps and at the epoch's end.
        """
        if self.seed is not None:
            seed_epoch(self.seed, self.epoch)
        self.print_freq = print_freq
        try:
            super().train(print_freq=print_freq, fixbase_epoch=fixbase_epoch, open_layers=open_layers)
        finally:
            self.print_freq = 1

    def forward_backward(self, data: Dict[str, Tensor]) -> Optional[Dict[str, float]]:
        """One SGD step on ``{'img': [B, 3, H, W], 'pid': [B]}``; the meter values at a logging step, else None.

        The step does not wait for the device: its meters are summed there (:class:`DeviceMeters`)
        and read every ``print_freq`` steps and at the epoch's last step, as their means over the
        steps since the last read (torchreid's ``MetricMeter`` skips a None).
        """
        imgs, pids = self.parse_data_for_train(data)
        if self.weight_t > 0:
            check_triplet_batch(pids)  # on the data loader's tensor, before it goes to the device
        loss_weighting = self.dcal_reid.loss_weighting
        device = loss_weighting.log_vars.device
        imgs, pids = imgs.to(device), pids.to(device)
        with torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            output = self.model(imgs, branch_outputs=True)
            branch_losses = [None if getattr(output, f'{name}_feature') is None else
                             self.branch_loss(getattr(output, f'{name}_feature'), getattr(output, f'{name}_logits'),
                                              pids) for name in BRANCHES]
        loss = loss_weighting(branch_losses)
        self.optimizer.zero_grad()
        if self.grad_scaler is None:
            loss.backward()
            self.optimizer.step()
        else:  # float16: dynamic loss scale
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        self.meters.add(self.meter_values(loss, branch_losses, output.sa_logits, pids), self.batch_idx)
        if (self.batch_idx + 1) % self.print_freq and self.batch_idx + 1 != self.num_batches:
            return None
        return self.read_meters()

    def meter_values(self, loss: Tensor, branch_losses: List[Optional[Tensor]], sa_logits: Tensor,
                     pids: Tensor) -> Dict[str, Tensor]:
        """The step's meters as device scalars: total and branch losses, weights ``w_*`` after the step, SA accuracy."""
        weights = self.dcal_reid.loss_weighting.weights
        present = [(name, value, weights[index]) for index, (name, value) in enumerate(zip(BRANCHES, branch_losses))
                   if value is not None]
        values = {'loss': loss}
        values.update({f'loss_{name}': value for name, value, _ in present})
        values.update({f'w_{name}': weight for name, _, weight in present})
        values['acc'] = torchreid.metrics.accuracy(sa_logits, pids)[0]
        return values

    def read_meters(self) -> Dict[str, float]:
        """The meters' means since the last read (one wait for the device), after checking the state.

        Raises ``NonFiniteLossError`` naming the epoch, the first iteration and the branch if a loss or
        weight was NaN or infinite since the last read, and ``NonFiniteStateError`` naming the tensor if
        a weight, buffer or optimizer state is not finite now (:func:`~dcal_plugin.core.check_finite_state`).
        torchreid writes checkpoints only between epochs and the epoch's last step reads the meters
        (and :meth:`save_model` checks again), so no checkpoint of a diverged state is written.
        """
        means, non_finite = self.meters.read()
        if non_finite is not None:
            step, values = non_finite
            check_finite(describe_meters(values), f'epoch {self.epoch + 1}, iteration {step + 1}')
        check_finite_state(self.dcal_reid, self.optimizer, f'epoch {self.epoch + 1}, iteration {self.batch_idx + 1}')
        return means

    def save_model(self, epoch: int, rank1: float, save_dir: str, is_best: bool = False) -> None:
        """torchreid's checkpoint ``save_dir/model/model.pth.tar-{epoch + 1}``, written atomically, of a finite state.

        The keys are torchreid's (``state_dict``, ``epoch``, ``rank1``, ``optimizer``, ``scheduler``;
        plus ``grad_scaler`` under float16), ``rank1`` a Python float (torchreid passes a NumPy
        scalar), so the file is plain data that torchreid's own ``load_pretrained_weights``,
        ``resume_from_checkpoint`` and ``FeatureExtractor`` read with ``weights_only=True``. The file,
        the best's copy and ``last_checkpoint`` are each written whole or not at all
        (:func:`~dcal_plugin.torchreid.checkpoint.save_checkpoint`).
        """
        check_finite_state(self.dcal_reid, self.optimizer, f'the checkpoint of epoch {epoch + 1}')
        state = dict(state_dict=self.dcal_reid.state_dict(), epoch=epoch + 1, rank1=float(rank1),
                     optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict())
        if self.grad_scaler is not None:
            state['grad_scaler'] = self.grad_scaler.state_dict()
        save_checkpoint(state, osp.join(save_dir, 'model'), is_best=is_best)

    def branch_loss(self, feature: Tensor, logits: Tensor, pids: Tensor) -> Tensor:
        """``weight_x·CE(logits [B, K]) + weight_t·triplet(feature [B, C])`` for one branch (scalar)."""
        loss = self.weight_x * self.criterion_x(logits, pids) if self.weight_x > 0 else logits.new_zeros(())
        if self.weight_t > 0:
            loss = loss + self.weight_t * self.criterion_t(feature, pids)
        return loss


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside an ``nn.DataParallel`` or ``DistributedDataParallel``, else ``model`` itself."""
    return model.module if isinstance(model, PARALLEL_WRAPPERS) else model


def describe_meters(values: Dict[str, float]) -> Dict[str, float]:
    """``{meter: value}`` named for messages, branch by branch (loss, then weight), then the total loss and accuracy."""
    names = {f'{kind}_{branch}': f"the {branch} branch's {what}"
             for branch in BRANCHES for kind, what in (('loss', 'loss'), ('w', 'uncertainty weight'))}
    names.update(loss='the total loss', acc="the SA branch's accuracy")
    return {text: values[name] for name, text in names.items() if name in values}


def check_triplet_batch(pids: Tensor) -> None:
    """Raise unless the batch ``[B]`` holds >= 2 identities with >= 2 images each (hard-mining triplet loss)."""
    ids, counts = torch.unique(pids, return_counts=True)
    if len(ids) < 2 or bool((counts < 2).any()):
        shown = dict(zip(ids.tolist()[:8], counts.tolist()[:8]))
        raise ValueError(
            f'the triplet loss needs a batch of >= 2 identities with >= 2 images each, got images per identity '
            f'{shown}{" ..." if len(ids) > 8 else ""}: use sampler.train_sampler RandomIdentitySampler with '
            'sampler.num_instances >= 2 (or loss.triplet.weight_t 0)')


def check_image_size(datamanager, model: DCALReID) -> None:
    """Raise unless the data manager's ``height`` × ``width`` is the image size ``model`` was built for (or it takes
    any)."""
    data_size = (datamanager.height, datamanager.width)
    model_size = tuple(model.dcal.vit.patch_embed.img_size)
    if getattr(model.dcal.vit, 'dynamic_img_size', False):
        stride = model.dcal.patch_stride
        if data_size[0] % stride[0] or data_size[1] % stride[1]:
            raise ValueError(f'the data manager yields {data_size[0]}x{data_size[1]} images, which the model\'s '
                             f'{stride[0]}x{stride[1]} patches do not tile: use multiples of them')
        return
    if data_size != model_size:
        raise ValueError(
            f'the data manager yields {data_size[0]}x{data_size[1]} images but the model was built for '
            f'{model_size[0]}x{model_size[1]}: build it at the data\'s size (build_model(\'NAME_256x256\', ...) '
            f'for 256x256, build_dcal_reid(..., img_size={data_size}) for any size) or set the data manager\'s '
            f'height and width to {model_size[0]} and {model_size[1]}')


def check_query_identities(test_dataset: Dict[str, Dict[str, List[Tuple]]]) -> None:
    """Raise if a query identity of any test set has no gallery image
    (``{name: {'query': items, 'gallery': items}}``)."""
    for name, splits in test_dataset.items():
        missing = sorted({item[1] for item in splits['query']} - {item[1] for item in splits['gallery']})
        if missing:
            raise ValueError(f'{name}: query identities {missing[:10]}{" ..." if len(missing) > 10 else ""} have no '
                             'image in the gallery; torchreid\'s evaluate_rank would skip those queries silently')
