"""The main demo: a DCAL DeiT-Tiny built from a checkpoint timm writes, run on the built-in digits data (CUB layout).

Prints the SA / GLCA / PWCA branch outputs in train and eval mode and writes rollout heat-maps.
The weights are timm's random initialisation (nothing can be downloaded here): the printed
predictions are at chance level; the point is the pipeline, the shapes and the losses.
"""
import argparse
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image

from dcal_plugin.core import DCALViT, UncertaintyWeightedLoss
from dcal_plugin.demo_data import make_demo_data
from dcal_plugin.visualization import save_rollout_figure

MODEL = 'deit_tiny_patch16_224'


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='demo_output', help='folder for data, checkpoint and heat-maps')
    parser.add_argument('--img-size', type=int, default=448, help='model input size (the checkpoint is 224)')
    parser.add_argument('--num-images', type=int, default=4, help='test images to run (>= 2 for PWCA)')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


def load_cub_test_images(root: Path, count: int, size: int):
    """The first ``count`` test images of a CUB-layout folder: RGB uint8 ``[count, size, size, 3]`` and labels."""
    paths = dict(line.split() for line in (root / 'images.txt').read_text().splitlines())
    labels = dict(line.split() for line in (root / 'image_class_labels.txt').read_text().splitlines())
    is_train = dict(line.split() for line in (root / 'train_test_split.txt').read_text().splitlines())
    test_ids = [image_id for image_id in paths if is_train[image_id] == '0'][:count]
    pictures = [np.asarray(Image.open(root / 'images' / paths[i]).convert('RGB').resize((size, size), Image.BILINEAR))
                for i in test_ids]
    return np.stack(pictures), torch.tensor([int(labels[i]) - 1 for i in test_ids])


def to_tensor(pictures: np.ndarray, model: DCALViT) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` -> normalised float ``[B, 3, H, W]`` with the model's pretrained mean/std."""
    cfg = model.vit.pretrained_cfg
    x = torch.from_numpy(pictures).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(cfg['mean']).view(1, 3, 1, 1)) / torch.tensor(cfg['std']).view(1, 3, 1, 1)


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    root = make_demo_data(out / 'data', 'cub', seed=args.seed, overwrite=True, image_size=128,
                          train_per_class=2, test_per_class=2)
    num_classes = len((root / 'classes.txt').read_text().splitlines())
    print(f'[1/5] demo data (sklearn digits on cluttered canvases, CUB-200-2011 layout): {root}')

    checkpoint = out / f'{MODEL}.pth'
    torch.save(timm.create_model(MODEL, pretrained=False, num_classes=num_classes).state_dict(), checkpoint)
    print(f'[2/5] timm wrote {MODEL} (random init, {num_classes} classes): {checkpoint}')

    model = DCALViT.from_timm(MODEL, checkpoint_path=str(checkpoint), img_size=args.img_size, num_classes=num_classes)
    sa_params = sum(p.numel() for p in model.vit.parameters())
    glca_params = sum(p.numel() for m in (model.glca_block, model.glca_norm, model.glca_head) for p in m.parameters())
    print(f'[3/5] DCALViT at {args.img_size}x{args.img_size}: patch grid {model.grid_size} '
          f'(position embeddings resized from 14x14 by timm\'s filter); SA {sa_params / 1e6:.2f} M params, '
          f'GLCA +{glca_params / 1e6:.2f} M (+{100 * glca_params / sa_params:.1f}%)')

    pictures, labels = load_cub_test_images(root, args.num_images, args.img_size)
    x = to_tensor(pictures, model)
    criterion = UncertaintyWeightedLoss()
    model.train()
    partner = torch.roll(torch.arange(len(x)), 1)
    train_out = model(x, distractor_index=partner)
    losses = [F.cross_entropy(z, labels) for z in (train_out.sa_logits, train_out.glca_logits, train_out.pwca_logits)]
    total = criterion(losses)
    total.backward()
    print(f'[4/5] train mode, batch {len(x)}, PWCA partners {partner.tolist()}: '
          f'loss_sa {losses[0]:.3f}  loss_glca {losses[1]:.3f}  loss_pwca {losses[2]:.3f}  '
          f'uncertainty-weighted {total:.3f}  weights {[round(w, 3) for w in criterion.weights.tolist()]}')
    print(f'      features: sa {tuple(train_out.sa_feature.shape)}  glca {tuple(train_out.glca_feature.shape)}  '
          f'pwca {tuple(train_out.pwca_feature.shape)}; local queries per image: {train_out.local_query_index.shape[1]}')

    model.eval()
    with torch.no_grad():
        eval_out = model(x)
        heat = model.rollout_map(x)
    fused = eval_out.fgvc_prediction.argmax(-1)
    print(f'[5/5] eval mode: PWCA not run (pwca_logits={eval_out.pwca_logits}); Re-ID feature '
          f'{tuple(eval_out.reid_feature.shape)}; untrained, so predictions are chance (1/{num_classes})')
    for b in range(len(x)):
        print(f'      image {b}: label {labels[b].item()}  SA {eval_out.sa_logits[b].argmax().item()}  '
              f'GLCA {eval_out.glca_logits[b].argmax().item()}  fused {fused[b].item()}')
        path = save_rollout_figure(out / f'rollout_{b}.png', pictures[b], heat[b].numpy(),
                                   eval_out.local_query_index[b].tolist())
        print(f'      heat-map (input | rollout | overlay with local queries): {path}')
    print(f'done in {time.perf_counter() - start:.1f} s')


if __name__ == '__main__':
    main()
