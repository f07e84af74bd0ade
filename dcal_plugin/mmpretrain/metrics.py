"""``DCALBranchAccuracy``: top-1 of SA alone, GLCA alone and the fused prediction, from one test pass."""
from typing import Dict, List, Sequence

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
