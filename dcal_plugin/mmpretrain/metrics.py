"""``DCALBranchAccuracy``: top-1 of SA alone, GLCA alone and the fused prediction, from one test pass."""
import json
from pathlib import Path
from typing import Dict, List, Sequence, Union

import torch
from mmengine.evaluator import BaseMetric
from mmpretrain.registry import METRICS

SCORES = {'sa': 'sa_score', 'glca': 'glca_score', 'fused': 'pred_score'}


@METRICS.register_module()
class DCALBranchAccuracy(BaseMetric):
    """Top-1 accuracy (%) of each DCAL branch: ``dcal/sa_top1``, ``dcal/glca_top1``, ``dcal/fused_top1``.

    Reads the ``sa_score``/``glca_score`` fields that :class:`DCALClsHead` writes beside
    ``pred_score``; a branch missing from the samples (e.g. GLCA in SA-only inference) is skipped.
    """

    default_prefix = 'dcal'

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Store, per sample, whether each branch's top-1 equals the ground truth."""
        for sample in data_samples:
            label = int(sample['gt_label'].reshape(-1)[0])
            self.results.append({name: int(sample[key].argmax()) == label
                                 for name, key in SCORES.items() if key in sample})

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """Mean correctness per branch, in percent."""
        names = [name for name in SCORES if results and name in results[0]]
        return {f'{name}_top1': 100.0 * torch.tensor([r[name] for r in results], dtype=torch.float64).mean().item()
                for name in names}


def read_validation_curve(work_dir: Union[str, Path]) -> Dict[str, List[float]]:
    """Per-validation top-1 (%) from a run's mmengine scalars: ``{'epoch', 'fused', 'sa'[, 'glca']}``.

    Reads ``<work_dir>/<timestamp>/vis_data/scalars.json`` (mmengine's ``LocalVisBackend``), the
    rows that hold ``accuracy/top1`` (the fused prediction) and this metric's branch keys.
    """
    [scalars] = Path(work_dir).glob('*/vis_data/scalars.json')
    rows = [row for row in map(json.loads, scalars.read_text().splitlines()) if 'accuracy/top1' in row]
    curve = dict(epoch=[row['step'] for row in rows], fused=[row['accuracy/top1'] for row in rows],
                 sa=[row['dcal/sa_top1'] for row in rows])
    if rows and 'dcal/glca_top1' in rows[0]:
        curve['glca'] = [row['dcal/glca_top1'] for row in rows]
    return curve
