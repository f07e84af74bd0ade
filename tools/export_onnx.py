"""Export a trained DCAL model to ONNX: ``python tools/export_onnx.py CONFIG CHECKPOINT [--sa-only] [--out PATH]``.

The graph's input ``images`` ``[N, 3, H, W]`` (float32, N free, H × W the model's input size)
holds images as the config's test pipeline packs them: pixel values 0–255 in the order mmcv's
``LoadImageFromFile`` reads them (BGR). The config's data preprocessor (BGR to RGB, mean/std) is
part of the graph. Outputs: ``scores`` ``[N, K]``, what the head puts in ``pred_score`` (the
mean of SA's and GLCA's softmax; SA's softmax with ``--sa-only``), ``sa_logits`` ``[N, K]`` and,
with GLCA, ``glca_logits`` ``[N, K]`` and ``local_query_index`` ``[N, R]`` (int64: GLCA's top-R
patches of the class-token rollout, row-major on the patch grid). After writing the file, the
tool runs it with onnxruntime, when installed, on a random batch of another size and prints the
largest differences to PyTorch. The graph is float32 in every case: a checkpoint of a bfloat16 or
float16 model is exported with its weights cast to float32, and the tool says so.
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.runner.checkpoint import CheckpointLoader
from torch import Tensor, nn

from dcal_plugin.core import DCALViT
from dcal_plugin.mmpretrain import DCALClsHead, DCALVisionTransformer, build_trained_model

MIN_OPSET = 18  # the lowest opset torch's exporter writes (older ones fail its conversion on this graph)
EXPORT_BATCH, CHECK_BATCH = 2, 3  # the traced example's batch and the check's: another size, so the axis stays free
SA_OUTPUTS = ('scores', 'sa_logits')
GLCA_OUTPUTS = ('glca_logits', 'local_query_index')


class InferenceGraph(nn.Module):
    """A trained DCAL ``ImageClassifier`` as the exported graph: packed images -> named outputs (module docstring)."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: Tensor) -> Tuple[Tensor, ...]:
        """Images ``[N, 3, H, W]`` -> scores, SA logits ``[N, K]`` (with GLCA: GLCA logits ``[N, K]``, local queries
        ``[N, R]``)."""
        inputs = self.classifier.data_preprocessor({'inputs': images})['inputs']
        out = self.classifier.backbone.dcal(inputs)
        sa_logits, glca_logits = self.classifier.head((out.sa_feature, out.glca_feature))
        scores, _ = self.classifier.head.scores((sa_logits, glca_logits))
        if glca_logits is None:
            return scores, sa_logits
        return scores, sa_logits, glca_logits, out.local_query_index


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Export a trained DCAL classifier to ONNX')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint written by tools/train.py (or tools/publish_model.py)')
    parser.add_argument('--out', help='ONNX file (default: the checkpoint\'s path with .onnx, or _sa-only.onnx)')
    parser.add_argument('--sa-only', action='store_true', help='export SA only (GLCA and the rollout skipped)')
    parser.add_argument('--opset', type=int, default=MIN_OPSET,
                        help=f'ONNX opset, at least {MIN_OPSET} (default; onnxruntime >= 1.14 reads it)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config entries')
    args = parser.parse_args(argv)
    if args.opset < MIN_OPSET:
        parser.error(f'--opset {args.opset}: torch\'s exporter writes opset {MIN_OPSET} and later')
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    for kind, path in (('config', args.config), ('checkpoint', args.checkpoint)):
        if not Path(path).is_file():
            raise SystemExit(f'{kind} not found: {path}')
    cfg = Config.fromfile(args.config)
    if args.sa_only:
        cfg.model.backbone.sa_only_inference = True
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        classifier, _ = build_trained_model(cfg, args.checkpoint, strict=True)
    except RuntimeError as error:
        raise SystemExit(f'{args.checkpoint} does not fit the model of {args.config}: {error}') from error
    graph = InferenceGraph(check_exportable(classifier)).eval()
    print(precision_note(args.checkpoint))
    out = Path(args.out) if args.out else default_out(args.checkpoint, args.sa_only)
    names = export(graph, out, args.opset)
    print(f'{out}: input images [N, 3, {", ".join(map(str, graph_input_size(classifier)))}], '
          f'outputs {", ".join(names)}, opset {args.opset}')
    print(check_with_onnxruntime(graph, out, names))


def check_exportable(classifier: nn.Module) -> nn.Module:
    """The classifier if it is a DCAL ``ImageClassifier`` whose eval forward is deterministic; else a clear error."""
    if not isinstance(classifier.backbone, DCALVisionTransformer) or not isinstance(classifier.head, DCALClsHead):
        raise SystemExit(f'not a DCAL model: backbone {type(classifier.backbone).__name__}, head '
                         f'{type(classifier.head).__name__} (export needs DCALVisionTransformer and DCALClsHead)')
    if getattr(classifier, 'neck', None) is not None:
        raise SystemExit(f'a neck ({type(classifier.neck).__name__}) between backbone and head is not supported')
    dcal = classifier.backbone.dcal
    if not isinstance(dcal, DCALViT):
        raise SystemExit(f'ONNX export covers DCALViT models (ViT, DeiT, R50-ViT, DINOv2, CLIP), '
                         f'not {type(dcal).__name__}')
    if dcal.plan(EXPORT_BATCH).glca_block is not None and dcal.query_selection == 'random':
        raise SystemExit('query_selection=\'random\' draws GLCA\'s queries at random in every call: export the '
                         'model with \'rollout\' (--cfg-options model.backbone.query_selection=rollout) or --sa-only')
    return classifier


def precision_note(checkpoint: str) -> str:
    """One line: the graph is float32, and which half-precision weights of ``checkpoint`` were cast to it."""
    loaded = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
    halves = sorted({str(value.dtype).replace('torch.', '') for value in loaded.get('state_dict', loaded).values()
                     if isinstance(value, Tensor) and value.is_floating_point() and value.dtype != torch.float32})
    if not halves:
        return 'exporting in float32'
    return (f'exporting in float32: the checkpoint\'s {" and ".join(halves)} weights are cast to float32 '
            '(this tool writes float32 graphs; convert the file for a half-precision one)')


def default_out(checkpoint: str, sa_only: bool) -> Path:
    """``CKPT.onnx`` beside the checkpoint, ``CKPT_sa-only.onnx`` for an SA-only export."""
    path = Path(checkpoint)
    return path.with_name(path.stem + ('_sa-only' if sa_only else '') + '.onnx')


def graph_input_size(classifier: nn.Module) -> Tuple[int, int]:
    """``(H, W)`` of the images the model was built for."""
    return tuple(classifier.backbone.dcal.vit.patch_embed.img_size)


def random_images(batch: int, size: Tuple[int, int], seed: int) -> Tensor:
    """Random pixel values 0–255 ``[batch, 3, H, W]`` (float32) from a generator of their own."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, *size), generator=generator).float()


def export(graph: InferenceGraph, out: Path, opset: int) -> Tuple[str, ...]:
    """Write ``graph`` to ``out`` (one file, batch axis free) through torch's exporter; return its output names."""
    example = random_images(EXPORT_BATCH, graph_input_size(graph.classifier), seed=0)
    with torch.no_grad():
        names = (SA_OUTPUTS + GLCA_OUTPUTS)[:len(graph(example))]
        program = torch.onnx.export(
            graph, (example,), input_names=['images'], output_names=list(names), opset_version=opset,
            dynamic_shapes={'images': {0: torch.export.Dim('batch')}}, dynamo=True, verbose=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(out), external_data=False)  # torch still writes external data past protobuf's 2 GB
    return names


def check_with_onnxruntime(graph: InferenceGraph, onnx_file: Path, names: Sequence[str]) -> str:
    """One line: the largest differences between onnxruntime and PyTorch on a random batch, or why it was skipped."""
    try:
        import onnxruntime
    except ImportError:
        return 'onnxruntime is not installed: skipped the check against PyTorch (pip install onnxruntime)'
    images = random_images(CHECK_BATCH, graph_input_size(graph.classifier), seed=1)
    session = onnxruntime.InferenceSession(str(onnx_file), providers=['CPUExecutionProvider'])
    results = dict(zip(names, session.run(list(names), {'images': images.numpy()})))
    with torch.no_grad():
        expected = dict(zip(names, (value.numpy() for value in graph(images))))
    report = [f'{name} {np.abs(results[name] - expected[name]).max():.2e}' for name in names
              if name != 'local_query_index']
    if 'local_query_index' in names:
        same = (np.sort(results['local_query_index'], -1) == np.sort(expected['local_query_index'], -1)).all(-1)
        report.append(f'local_query_index the same top-R in {int(same.sum())}/{len(same)} images')
    return f'onnxruntime vs PyTorch on {CHECK_BATCH} random images: max abs difference ' + ', '.join(report)


if __name__ == '__main__':
    main()
