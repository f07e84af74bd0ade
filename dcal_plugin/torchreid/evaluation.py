"""mAP and CMC of the SA, GLCA and concatenated features, with torchreid's distance and ``evaluate_rank``."""
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torchreid
from torch import Tensor
from torch.nn import functional as F

FEATURES = ('SA', 'GLCA', 'SA+GLCA')
MAX_RANK = 50  # evaluate_rank's default max_rank


@dataclass(frozen=True)
class RankResult:
    """Retrieval quality of one feature on one test set: mAP and CMC (``cmc[k-1]`` is Rank-k), both in [0, 1]."""

    mAP: float
    cmc: np.ndarray


@torch.no_grad()
def extract_features(engine, loader) -> Tuple[Tensor, np.ndarray, np.ndarray]:
    """Eval features ``[N, 2C]`` (CPU), pids ``[N]`` and camids ``[N]`` of a loader, as torchreid's test loop gets
    them."""
    engine.set_model_mode('eval')
    device = next(engine.model.parameters()).device
    features, pids, camids = [], [], []
    for data in loader:
        imgs, batch_pids, batch_camids = engine.parse_data_for_eval(data)
        features.append(engine.extract_features(imgs.to(device)).cpu())
        pids.extend(batch_pids.tolist())
        camids.extend(batch_camids.tolist())
    return torch.cat(features), np.asarray(pids), np.asarray(camids)


def evaluate_branches(engine, dist_metric: str = 'euclidean', normalize_feature: bool = False,
                      use_metric_cuhk03: bool = False, rerank: bool = False) -> Dict[str, Dict[str, RankResult]]:
    """``{test set: {'SA' | 'GLCA' | 'SA+GLCA': RankResult}}`` for a DCALEngine's model on its test loaders.

    Extracts the features; :func:`score_branches` scores them. (A DCALEngine's own test scores the
    branches from the features it extracts anyway: ``engine.branch_results``.)
    """
    results = {}
    for name, loaders in engine.test_loader.items():
        query, gallery = extract_features(engine, loaders['query']), extract_features(engine, loaders['gallery'])
        results[name] = score_branches(engine.dcal_reid, query, gallery, dist_metric, normalize_feature,
                                       use_metric_cuhk03, rerank)
    return results


def score_branches(model, query: Tuple[Tensor, np.ndarray, np.ndarray], gallery: Tuple[Tensor, np.ndarray, np.ndarray],
                   dist_metric: str = 'euclidean', normalize_feature: bool = False, use_metric_cuhk03: bool = False,
                   rerank: bool = False) -> Dict[str, RankResult]:
    """``{'SA' | 'GLCA' | 'SA+GLCA': RankResult}`` of query and gallery (features ``[N, 2C]``, pids, camids).

    Without GLCA only 'SA' is scored. The eval feature is split into SA ``[:, :C]`` and GLCA
    ``[:, C:]``; each of the three is normalised (if asked), compared with torchreid's
    ``compute_distance_matrix``, re-ranked with its ``re_ranking`` if ``rerank``, and scored by its
    ``evaluate_rank``, exactly as torchreid's test scores the concatenation.
    """
    (query_features, q_pids, q_camids), (gallery_features, g_pids, g_camids) = query, gallery
    width = model.feature_dim
    features = FEATURES if len(model.retrieval_features) == 2 else FEATURES[:1]
    results = {}
    for feature, columns in zip(features, (slice(0, width), slice(width, None), slice(None))):
        qf, gf = query_features[:, columns], gallery_features[:, columns]
        if normalize_feature:
            qf, gf = F.normalize(qf, p=2, dim=1), F.normalize(gf, p=2, dim=1)
        distmat = torchreid.metrics.compute_distance_matrix(qf, gf, dist_metric).numpy()
        if rerank:
            distmat = torchreid.utils.re_ranking(
                distmat, torchreid.metrics.compute_distance_matrix(qf, qf, dist_metric).numpy(),
                torchreid.metrics.compute_distance_matrix(gf, gf, dist_metric).numpy())
        cmc, mAP = torchreid.metrics.evaluate_rank(
            distmat, q_pids, g_pids, q_camids, g_camids, use_metric_cuhk03=use_metric_cuhk03)
        results[feature] = RankResult(float(mAP), np.asarray(cmc))
    return results


def chance_level(query: Sequence[Tuple], gallery: Sequence[Tuple]) -> RankResult:
    """Expected mAP and CMC of a uniformly random ranking (exact), under ``evaluate_rank``'s protocol.

    Items are torchreid's ``(path, pid, camid, ...)``. Per query, after removing gallery items of
    its identity and camera, ``n`` items remain of which ``m`` match: a random ranking puts a match
    in the top k with probability ``1 - C(n-m, k)/C(n, k)``, and its expected AP is
    ``(H_n + (m-1)/(n-1)·(n - H_n)) / n`` (``H_n`` the harmonic number). Queries without a
    match are skipped, as ``evaluate_rank`` skips them.
    """
    pid_count = Counter(item[1] for item in gallery)
    view_count = Counter((item[1], item[2]) for item in gallery)
    ranks = np.arange(max_valid_rank(query, gallery))
    cmcs, aps = [], []
    for item in query:
        removed = view_count[item[1], item[2]]
        n, m = len(gallery) - removed, pid_count[item[1]] - removed
        if m == 0:
            continue
        cmcs.append(1.0 - np.cumprod((n - m - ranks) / (n - ranks)).clip(min=0.0))
        harmonic = np.sum(1.0 / np.arange(1, n + 1))
        aps.append((harmonic + (m - 1) / max(n - 1, 1) * (n - harmonic)) / n)
    return RankResult(float(np.mean(aps)), np.mean(cmcs, axis=0))


def ranked_lengths(query: Sequence[Tuple], gallery: Sequence[Tuple]) -> List[int]:
    """Per query that has a match: how many gallery items ``evaluate_rank`` ranks (same id and camera removed)."""
    pid_count = Counter(item[1] for item in gallery)
    view_count = Counter((item[1], item[2]) for item in gallery)
    return [len(gallery) - view_count[item[1], item[2]] for item in query
            if pid_count[item[1]] > view_count[item[1], item[2]]]


def max_valid_rank(query: Sequence[Tuple], gallery: Sequence[Tuple]) -> int:
    """The largest CMC rank ``evaluate_rank`` reports for these query and gallery items."""
    return min([MAX_RANK, *ranked_lengths(query, gallery)])


def check_evaluable(test_dataset: Dict[str, Dict[str, List[Tuple]]], ranks: Sequence[int]) -> None:
    """Raise before training where torchreid's test would fail or mis-score after it: a rank beyond the gallery, a
    ragged CMC (torchreid's Python ranking raises on it, its Cython ranking returns a falling CMC)."""
    for name, splits in test_dataset.items():
        lengths = ranked_lengths(splits['query'], splits['gallery'])
        if not lengths:
            raise ValueError(f'{name}: no query has a gallery image of its identity from another camera')
        if len(splits['gallery']) < MAX_RANK and len(set(lengths)) > 1:
            raise ValueError(f'{name}: torchreid\'s evaluate_rank cannot score a gallery of fewer than {MAX_RANK} '
                             'images in which queries lose different numbers of same-identity same-camera images '
                             f'(ranked lists of {sorted(set(lengths))} items)')
        limit = min(MAX_RANK, min(lengths))
        if max(ranks) > limit:
            raise ValueError(f'test.ranks {list(ranks)} asks for Rank-{max(ranks)}, but {name}\'s gallery gives '
                             f'CMC up to Rank-{limit}; use ranks <= {limit}')


def format_results(results: Dict[str, Dict[str, RankResult]], ranks: Sequence[int],
                   chance: Dict[str, RankResult], reranked: bool = False) -> List[str]:
    """A table per test set: mAP and Rank-k of SA, GLCA, SA+GLCA, and of random ranking (chance, never re-ranked)."""
    lines = []
    how = ', re-ranked' if reranked else ''
    for name, by_feature in results.items():
        lines.append(f'** DCAL results on {name}: SA, GLCA and their concatenation (the retrieval feature){how} **')
        lines.append(f'  {"feature":16s}{"mAP":>8s}' + ''.join(f'{f"Rank-{r}":>9s}' for r in ranks))
        for feature, result in list(by_feature.items()) + [('random ranking', chance[name])]:
            lines.append(f'  {feature:16s}{result.mAP:8.1%}' + ''.join(f'{result.cmc[r - 1]:9.1%}' for r in ranks))
    return lines
