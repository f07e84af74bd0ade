"""Deferred maps: the rollout's ``r·mean_h(P)`` a chunk of rows at a time, never a whole map, the reference's scores."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from dcal_plugin.core import DCALViT
from dcal_plugin.core import dcal_vit as dcal_vit_module
from dcal_plugin.core import deferred_map
from dcal_plugin.core.deferred_map import (
    CHUNK_BYTES, DeferredMap, chunk_bytes_on, head_mean_rows, read_map, row_times_head_mean)

from ..conftest import make_tiny_vit
from .reference import head_mean_attention, rollout_full
from .test_branches import images, sa_tokens_per_block


class CreatedShapes(TorchDispatchMode):
    """Records the shape of every tensor an operation returns."""

    def __init__(self):
        super().__init__()
        self.shapes = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.shapes.add(tuple(tensor.shape))
        return out


def explicit_head_mean(q, k):
    """``mean_h softmax(q kᵀ/√D)`` ``[B, Nq, Nk]`` in float64."""
    q, k = q.double(), k.double()
    return torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1).mean(1)


@pytest.mark.parametrize('chunk_rows', [1, 3, 10, 20])  # rows of one image: 1, 3 (the last of 1), 10; two images
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_row_times_head_mean_is_the_row_times_the_map_in_any_chunking(chunk_rows, dtype):
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 3, 10, 8, generator=g).mul(2).to(dtype) for _ in range(2))
    row = torch.rand(2, 10, generator=g)
    chunk_bytes = chunk_rows * 3 * 10 * 4
    deferred = DeferredMap(lambda: (q, k))
    got = row_times_head_mean(row, deferred, chunk_bytes)
    want_map = explicit_head_mean(q, k)  # half-precision queries and keys taken to float32 first, as exactly
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), (row.double().unsqueeze(1) @ want_map).squeeze(1), rtol=1e-5, atol=1e-6)
    whole = head_mean_rows(deferred, chunk_bytes=chunk_bytes)
    torch.testing.assert_close(whole.double(), want_map, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(head_mean_rows(deferred, queries=1, chunk_bytes=chunk_bytes), whole[:, :1])
    assert read_map(whole) is whole and torch.equal(read_map(deferred), head_mean_rows(deferred))
    with pytest.raises(ValueError, match='a row of 9 entries cannot multiply a map of 10 rows'):
        row_times_head_mean(row[:, :9], deferred)


def deferred_run(model, mode, x):
    """One forward (and backward in training) in ``mode``; returns the rollout's scores [B, P] and the shapes
    created."""
    if mode == 'eval, softmax None':
        model.softmax_with_head_mean = None
    model.train(mode.startswith('train'))
    model.set_grad_checkpointing(mode == 'train, checkpointing')
    autocast = torch.autocast('cpu', dtype=torch.bfloat16, enabled=mode == 'eval, bfloat16')
    with CreatedShapes() as created, autocast, torch.set_grad_enabled(model.training):
        out = model(x, torch.tensor([1, 0]) if model.training else None)
        if model.training:
            F.cross_entropy(out.glca_logits, torch.tensor([0, 1])).backward()
    return created.shapes


MODES = ['train', 'train, checkpointing', 'eval, softmax None', 'eval, bfloat16']


@pytest.mark.parametrize('mode', MODES)
def test_the_deferred_rollout_makes_no_whole_map_and_gives_the_reference_scores(monkeypatch, mode):
    """No ``[B, H, N, N]`` or ``[B, N, N]`` tensor anywhere in the step; scores = the float64 loop's row 0 of ``Ŝ``.

    Chunks of 5 query rows of one image (the default ``CPU_CHUNK_BYTES`` holds this tiny model's batch).
    """
    model = DCALViT(make_tiny_vit(), local_query_ratio=0.25)
    x = images(batch=2)
    monkeypatch.setattr(deferred_map, 'CPU_CHUNK_BYTES', 5 * 3 * 17 * 4)
    scores, rollout = [], dcal_vit_module.class_token_rollout
    monkeypatch.setattr(dcal_vit_module, 'class_token_rollout',
                        lambda *args, **kwargs: scores.append(rollout(*args, **kwargs)) or scores[-1])
    shapes = deferred_run(model, mode, x)
    batch, heads, tokens = 2, model.vit.blocks[0].attn.num_heads, 17
    assert (batch, heads, tokens, tokens) not in shapes and (batch, tokens, tokens) not in shapes, mode
    assert {(batch, heads, 1, tokens), (1, heads, 5, tokens)} <= shapes  # the class row; one image's 5 rows
    with torch.no_grad():
        tokens_per_block = sa_tokens_per_block(model.vit, x)
        for b in range(2):
            maps = [head_mean_attention(block, tokens_per_block[depth][b])
                    for depth, block in enumerate(model.vit.blocks)]
            want = rollout_full(maps)[0, 1:]
            # bfloat16: as tests/core/test_mixed_precision.py's rollout map (steep scores, errors adding up over blocks)
            tolerance = dict(rtol=0, atol=2 ** -6) if 'bfloat16' in mode else dict(rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(scores[0][b].double(), want, **tolerance)


def test_under_checkpointing_the_maps_keep_nothing_alive_across_blocks():
    """A train forward's peak memory with the rollout's maps equals that with random queries (no maps).

    Keeping each block's queries and keys (views of its ``qkv`` output) would add a ``qkv`` per block
    before GLCA's: 5 x 2.4 MB here.
    """
    from benchmarks.measure import peak_step_bytes

    x, partner = torch.randn(8, 3, 128, 128, generator=torch.Generator().manual_seed(0)), torch.arange(1, 9) % 8
    peaks = {}
    for selection in ('rollout', 'random'):
        model = DCALViT(make_tiny_vit(img_size=128, depth=6), grad_checkpointing=True, query_selection=selection)
        peaks[selection] = peak_step_bytes(lambda: model.train()(x, partner), lambda: 0, torch.device('cpu'))
    qkv_bytes = 2 * 8 * 65 * 3 * 192 * 4  # one block's qkv output over the [SA; PWCA] stream
    assert peaks['rollout'] - peaks['random'] < qkv_bytes / 4, peaks  # measured: 0


def test_vit_base_at_448_batch_16_is_read_in_chunks_of_at_most_chunk_bytes():
    """The issue's workload, on fake tensors (shapes only), with the chunks of a GPU: one image each; CPU's are
    smaller."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    assert chunk_bytes_on(torch.device('cuda')) == CHUNK_BYTES and chunk_bytes_on(torch.device('cpu')) < CHUNK_BYTES
    with FakeTensorMode():
        q, k = (torch.empty(16, 12, 785, 64) for _ in range(2))
        with CreatedShapes() as created:
            row_times_head_mean(torch.empty(16, 785), DeferredMap(lambda: (q, k)), CHUNK_BYTES)
    assert (1, 12, 785, 785) in created.shapes and 1 * 12 * 785 * 785 * 4 <= CHUNK_BYTES
    assert (16, 12, 785, 785) not in created.shapes and (16, 785, 785) not in created.shapes
    probabilities = [shape for shape in created.shapes if shape[-1] == 785 and shape[-2] != 64]  # not kᵀ
    assert max(torch.Size(shape).numel() * 4 for shape in probabilities) <= CHUNK_BYTES


def test_bf16_deit_small_selects_float32s_top_r_without_a_whole_map():
    """Random-init DeiT-S (nearly uniform attention: close scores) at 224: bfloat16 autocast keeps float32's top-R.

    Chunks of 2 images. At 448 the overlap measured 99.4% (benchmarks/map_memory.py), as before the maps were
    deferred.
    """
    torch.manual_seed(0)
    model = DCALViT.from_timm('deit_small_patch16_224').eval()
    x = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(x).local_query_index
        with CreatedShapes() as created, torch.autocast('cpu', dtype=torch.bfloat16):
            half = model(x).local_query_index
    assert (2, 6, 197, 197) in created.shapes
    assert (4, 6, 197, 197) not in created.shapes and (4, 197, 197) not in created.shapes
    shared = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(half, full))
    assert shared >= 0.99 * full.numel()


@pytest.mark.parametrize('checkpointing', [False, True])
def test_training_recomputes_queries_and_keys_only_under_checkpointing(checkpointing):
    """Without checkpointing the attention's backward keeps every block's q, k anyway: the rollout reads those (each
    block's ``norm1`` runs once per forward); under checkpointing it recomputes them from the tokens entering each
    block whose whole map it needs (those before GLCA's source block: ``norm1`` twice)."""
    model = DCALViT(make_tiny_vit(), local_query_ratio=0.25, grad_checkpointing=checkpointing).train()
    calls = []
    for block in model.vit.blocks:
        block.norm1.register_forward_hook(lambda module, args, out: calls.append(module))
    model(images(batch=2), torch.tensor([1, 0]))
    per_block = [sum(call is block.norm1 for call in calls) for block in model.vit.blocks]
    whole_maps = len(model.vit.blocks) - 1  # the last block's class row is read from views right after it
    assert per_block == [2 if checkpointing else 1] * whole_maps + [1], per_block
