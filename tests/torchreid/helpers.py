"""A tiny DCAL config that trains in seconds, and mAP/CMC computed independently of torchreid."""
import numpy as np

from dcal_plugin.torchreid import get_default_config

TINY_MODEL = dict(depth=2, patch_size=8, embed_dim=64, num_heads=2)


def tiny_config(root, dataset, save_dir, *opts):
    """The default config shrunk to 32×32 images, a 2-block 64-wide DeiT, 2 ids × 4 images per batch, 1 epoch."""
    cfg = get_default_config()
    for key, value in TINY_MODEL.items():
        setattr(cfg.model.timm_kwargs, key, value)
    cfg.merge_from_list([
        'data.root', str(root), 'data.sources', [dataset], 'data.targets', [dataset], 'data.save_dir', str(save_dir),
        'data.height', 32, 'data.width', 32, 'data.workers', 0, 'train.batch_size', 8, 'train.max_epoch', 1,
        'train.warmup_epochs', 0, 'train.print_freq', 1, 'test.batch_size', 16, 'test.ranks', [1, 5, 10],
        'model.pretrained', False, *opts])
    return cfg


def reference_rank(query, gallery, q_pids, g_pids, q_camids, g_camids, normalize=True):
    """(mAP, CMC) by definition: per query, drop same-id same-camera gallery items, rank by Euclidean distance."""
    query, gallery = np.asarray(query, np.float64), np.asarray(gallery, np.float64)
    if normalize:
        query = query / np.linalg.norm(query, axis=1, keepdims=True)
        gallery = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    aps, cmcs, length = [], [], None
    for i in range(len(query)):
        keep = [j for j in range(len(gallery)) if not (g_pids[j] == q_pids[i] and g_camids[j] == q_camids[i])]
        ranked = sorted(keep, key=lambda j: float(np.sum((query[i] - gallery[j]) ** 2)))
        hits = [g_pids[j] == q_pids[i] for j in ranked]
        if not any(hits):
            continue
        length = len(hits) if length is None else min(length, len(hits))
        first = hits.index(True)
        cmcs.append([float(k >= first) for k in range(len(hits))])
        precisions = [sum(hits[:k + 1]) / (k + 1) for k, hit in enumerate(hits) if hit]
        aps.append(sum(precisions) / sum(hits))
    return float(np.mean(aps)), np.mean([cmc[:length] for cmc in cmcs], axis=0)
