"""DCALEngine end to end through torchreid's engine, on tiny digits data in the VeRi-776 and MSMT17 (V1) layouts."""
import pickle
import re

import numpy as np
import pytest
import torch

torchreid = pytest.importorskip('torchreid')

from dcal_plugin.torchreid import build_engine, evaluate_branches, resume_from_checkpoint  # noqa: E402

from .helpers import TINY_MODEL, reference_rank, tiny_config  # noqa: E402


def eval_features(model, loader):
    """Eval-mode model outputs [N, 2C] (numpy), pids and camids of a test loader."""
    model.eval()
    features, pids, camids = [], [], []
    with torch.no_grad():
        for data in loader:
            features.append(model(data['img']))
            pids += data['pid'].tolist()
            camids += data['camid'].tolist()
    return torch.cat(features).numpy(), np.array(pids), np.array(camids)


@pytest.mark.parametrize('dataset', ['veri776', 'msmt17'])
def test_one_epoch_and_test_agree_with_an_independent_evaluation(dataset, veri_data, msmt_data, tmp_path, capsys):
    data = veri_data if dataset == 'veri776' else msmt_data
    torch.manual_seed(0)
    engine = build_engine(tiny_config(data.root, dataset, tmp_path))
    before = {key: value.clone() for key, value in engine.model.state_dict().items()}
    engine.run(save_dir=str(tmp_path), max_epoch=1, print_freq=1, normalize_feature=True, ranks=[1, 5, 10])
    out = capsys.readouterr().out

    assert re.search(r'loss [\d.]+ .*loss_sa [\d.]+ .*loss_glca [\d.]+ .*loss_pwca [\d.]+ .*w_sa [\d.]+ .*acc', out)
    assert (tmp_path / 'model' / 'model.pth.tar-1').is_file()
    after = engine.model.state_dict()
    for key in ('loss_weighting.log_vars', 'dcal.glca_block.attn.qkv.weight', 'sa_classifier.weight',
                'glca_bnneck.weight', 'sa_bnneck.running_mean'):
        assert not torch.equal(after[key], before[key]), key

    width = TINY_MODEL['embed_dim']
    query, q_pids, q_camids = eval_features(engine.model, engine.test_loader[dataset]['query'])
    gallery, g_pids, g_camids = eval_features(engine.model, engine.test_loader[dataset]['gallery'])
    assert query.shape == (4, 2 * width) and gallery.shape == (16 if dataset == 'veri776' else 12, 2 * width)
    mAP, cmc = reference_rank(query, gallery, q_pids, g_pids, q_camids, g_camids)
    assert f'mAP: {mAP:.1%}' in out  # torchreid's own test of the concatenated feature
    for rank in (1, 5, 10):
        assert f'Rank-{rank:<3}: {cmc[rank - 1]:.1%}' in out
    results = evaluate_branches(engine, normalize_feature=True)[dataset]
    for name, columns in (('SA', slice(0, width)), ('GLCA', slice(width, None)), ('SA+GLCA', slice(None))):
        mAP, cmc = reference_rank(query[:, columns], gallery[:, columns], q_pids, g_pids, q_camids, g_camids)
        assert results[name].mAP == pytest.approx(mAP, abs=1e-6), name
        np.testing.assert_allclose(results[name].cmc, cmc, atol=1e-6, err_msg=name)


def test_resume_continues_at_the_next_epoch_with_the_same_state(veri_data, tmp_path, capsys):
    cfg = tiny_config(veri_data.root, 'veri776', tmp_path, 'train.max_epoch', 2)
    run_kwargs = dict(max_epoch=2, print_freq=1, ranks=[1])
    torch.manual_seed(0)
    straight = build_engine(cfg)
    straight.run(save_dir=str(tmp_path / 'straight'), **run_kwargs)
    torch.manual_seed(0)
    interrupted = build_engine(cfg)
    interrupted.run(save_dir=str(tmp_path / 'interrupted'), **dict(run_kwargs, max_epoch=1))

    torch.manual_seed(1)
    resumed = build_engine(cfg)
    start_epoch = resume_from_checkpoint(str(tmp_path / 'interrupted' / 'model' / 'model.pth.tar-1'),
                                         resumed.model, resumed.optimizer, resumed.scheduler)
    assert start_epoch == 1
    for key, value in interrupted.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    assert resumed.scheduler.state_dict() == interrupted.scheduler.state_dict()
    momentum = [state['momentum_buffer'] for state in resumed.optimizer.state_dict()['state'].values()]
    expected = [state['momentum_buffer'] for state in interrupted.optimizer.state_dict()['state'].values()]
    assert len(momentum) == len(expected) > 0 and all(torch.equal(a, b) for a, b in zip(momentum, expected))

    capsys.readouterr()
    resumed.run(save_dir=str(tmp_path / 'interrupted'), start_epoch=start_epoch, **run_kwargs)
    out = capsys.readouterr().out
    assert 'epoch: [2/2]' in out and 'epoch: [1/2]' not in out
    assert (tmp_path / 'interrupted' / 'model' / 'model.pth.tar-2').is_file()
    for key, value in straight.model.state_dict().items():  # bit for bit: each epoch is seeded from (seed, epoch)
        assert torch.equal(resumed.model.state_dict()[key], value), key


class Payload:
    """Not a tensor, container or numpy scalar: weights_only loading must refuse it."""


def test_resume_keeps_weights_only_loading_for_anything_else(veri_data, tmp_path):
    engine = build_engine(tiny_config(veri_data.root, 'veri776', tmp_path))
    path = tmp_path / 'foreign.pth.tar'
    torch.save({'state_dict': engine.model.state_dict(), 'epoch': 3, 'payload': Payload()}, path)
    with pytest.raises(pickle.UnpicklingError, match='Payload'):
        resume_from_checkpoint(str(path), engine.model, engine.optimizer, engine.scheduler)


def batch_hard_triplet(feature, pids, margin=None):
    """Hermans et al.: per anchor, farthest positive, nearest negative (Euclidean); soft margin, or hinge at margin."""
    dist = torch.cdist(feature, feature)
    same = pids[:, None] == pids[None, :]
    gap = dist.masked_fill(~same, float('-inf')).amax(1) - dist.masked_fill(same, float('inf')).amin(1)
    return (torch.log1p(torch.exp(gap)) if margin is None else torch.relu(gap + margin)).mean()


@pytest.mark.parametrize('recipe', ['transreid', 'torchreid'])
def test_step_combines_ce_and_triplet_per_branch_with_the_uncertainty_weights(veri_data, tmp_path, recipe):
    """Default: TransReID's plain cross-entropy and soft-margin triplet; torchreid's smoothing and hinge on request."""
    smoothing, margin = (0.0, None) if recipe == 'transreid' else (0.1, 0.3)
    options = [] if recipe == 'transreid' else ['loss.softmax.label_smooth', True, 'loss.triplet.margin', 0.3]
    engine = build_engine(tiny_config(veri_data.root, 'veri776', tmp_path, 'train.lr', 0.0, *options))
    with torch.no_grad():
        engine.model.loss_weighting.log_vars.copy_(torch.tensor([0.5, -0.3, 0.1]))
        for classifier in (engine.model.sa_classifier, engine.model.glca_classifier):
            classifier.weight.normal_(std=0.5)  # far from uniform predictions, where smoothing changes nothing
    imgs = torch.randn(8, 3, 32, 32)
    engine.model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        first = int(engine.model(imgs, branch_outputs=True).sa_logits[0].argmax())  # so that the accuracy is not 0
    batch = {'img': imgs, 'pid': torch.tensor([first] * 4 + [(first + 1) % 6] * 4)}
    torch.manual_seed(0)
    summary = engine.forward_backward(batch)
    torch.manual_seed(0)
    with torch.no_grad():
        out = engine.model(batch['img'], branch_outputs=True)
    losses = []
    for name in ('sa', 'glca', 'pwca'):
        ce = torch.nn.functional.cross_entropy(getattr(out, f'{name}_logits'), batch['pid'], label_smoothing=smoothing)
        losses.append(ce + batch_hard_triplet(getattr(out, f'{name}_feature'), batch['pid'], margin))
        assert summary[f'loss_{name}'] == pytest.approx(losses[-1].item(), rel=1e-4), name
    log_vars = torch.tensor([0.5, -0.3, 0.1])
    assert summary['loss'] == pytest.approx(0.5 * float((torch.exp(-log_vars) * torch.stack(losses) + log_vars).sum()),
                                            rel=1e-4)
    assert [summary[f'w_{name}'] for name in ('sa', 'glca', 'pwca')] == pytest.approx(torch.exp(-log_vars).tolist())
    hits = (out.sa_logits.argmax(1) == batch['pid']).float().mean().item()
    assert hits > 0 and summary['acc'] == pytest.approx(100 * hits)


@pytest.mark.parametrize('use_pwca', [True, False])
def test_without_glca_the_engine_trains_the_remaining_branches_and_scores_sa(veri_data, tmp_path, use_pwca):
    engine = build_engine(tiny_config(veri_data.root, 'veri776', tmp_path, 'model.use_glca', False,
                                      'model.use_pwca', use_pwca))
    assert not hasattr(engine.model, 'glca_classifier') and not hasattr(engine.model.dcal, 'glca_block')
    batch = {'img': torch.randn(8, 3, 32, 32), 'pid': torch.tensor([0] * 4 + [1] * 4)}
    engine.model.train()
    summary = engine.forward_backward(batch)
    want = {'loss', 'loss_sa', 'w_sa', 'acc'} | ({'loss_pwca', 'w_pwca'} if use_pwca else set())
    assert set(summary) == want
    log_vars = engine.model.loss_weighting.log_vars
    assert log_vars.grad[1] == 0 and (log_vars.grad[2] != 0) == use_pwca
    results = evaluate_branches(engine)['veri776']
    assert list(results) == ['SA']
    query, *_ = eval_features(engine.model, engine.test_loader['veri776']['query'])
    assert query.shape == (4, TINY_MODEL['embed_dim'])


def test_a_diverged_run_stops_at_its_first_non_finite_loss_and_keeps_the_finite_checkpoint(veri_data, tmp_path):
    from dcal_plugin.core import NonFiniteLossError

    engine = build_engine(tiny_config(veri_data.root, 'veri776', tmp_path, 'train.max_epoch', 2))
    train = engine.train

    def train_with_a_nan_glca_classifier_from_epoch_2(**kwargs):
        if engine.epoch == 1:
            engine.model.glca_classifier.weight.data.fill_(float('nan'))
        return train(**kwargs)

    engine.train = train_with_a_nan_glca_classifier_from_epoch_2
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, iteration 1: the glca branch's loss is nan"):
        engine.run(save_dir=str(tmp_path / 'run'), max_epoch=2, eval_freq=1, print_freq=1, ranks=[1])
    saved = sorted(path.name for path in (tmp_path / 'run' / 'model').iterdir())
    assert saved == ['last_checkpoint', 'model.pth.tar-1']
    state = torch.load(tmp_path / 'run' / 'model' / 'model.pth.tar-1', map_location='cpu', weights_only=False)
    assert all(torch.isfinite(value).all() for value in state['state_dict'].values() if value.is_floating_point())


@pytest.mark.parametrize('dtype', ['bfloat16', 'float16'])
def test_the_engines_amp_switch_trains_a_step_in_mixed_precision(veri_data, tmp_path, dtype):
    engine = build_engine(tiny_config(veri_data.root, 'veri776', tmp_path, 'train.amp', dtype))
    assert engine.amp_dtype == getattr(torch, dtype)
    assert (engine.grad_scaler is None) == (dtype == 'bfloat16')  # a loss scale for float16 only (its range)
    seen = []
    engine.model.dcal.vit.blocks[0].attn.qkv.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    before = [p.detach().clone() for p in engine.model.parameters()]
    engine.model.train()
    summary = engine.forward_backward({'img': torch.randn(8, 3, 32, 32), 'pid': torch.tensor([0] * 4 + [1] * 4)})
    assert seen == [getattr(torch, dtype)] and np.isfinite(summary['loss'])
    stepped = any(not torch.equal(a, b) for a, b in zip(before, engine.model.parameters()))
    # float16: the loss scale starts at 2^16, and a step whose scaled gradients overflow is skipped and halves it
    assert stepped or (dtype == 'float16' and engine.grad_scaler.get_scale() < 2.0 ** 16)


def test_a_step_waits_for_the_device_only_at_logging_steps(veri_data, tmp_path, monkeypatch):
    """Between logging steps nothing reads a device value (item, float, bool, tolist); the ids are checked on the
    loader's."""
    from dcal_plugin.torchreid import engine as engine_module

    engine = build_engine(tiny_config(veri_data.root, 'veri776', tmp_path))
    engine.model.train()
    batches = [{'img': torch.randn(8, 3, 32, 32), 'pid': torch.tensor([0] * 4 + [1] * 4)} for _ in range(2)]
    reads, checked = [], []
    for name in ('item', 'tolist', '__float__', '__bool__'):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *args, _name=name, _original=original: (
            reads.append(_name), _original(self, *args))[1])
    monkeypatch.setattr(engine_module, 'check_triplet_batch', checked.append)  # its reads are of the loader's tensor
    monkeypatch.setattr(torch, 'unique', lambda *args, **kwargs: pytest.fail('torch.unique outside the ids check'))
    engine.print_freq, engine.num_batches, engine.batch_idx = 2, 4, 0
    first = engine.forward_backward(batches[0])
    assert reads == [], 'a step between logging steps read a device value'
    assert first is None and checked == [batches[0]['pid']]
    engine.batch_idx = 1
    summary = engine.forward_backward(batches[1])
    assert reads and set(summary) == {'loss', 'loss_sa', 'loss_glca', 'loss_pwca', 'w_sa', 'w_glca', 'w_pwca', 'acc'}
    assert engine.meters.steps == 0  # read and reset: the next read averages the steps after this one


def test_the_engine_refuses_an_unknown_amp_dtype(veri_data, tmp_path):
    with pytest.raises(ValueError, match='amp_dtype must be one of'):
        build_engine(tiny_config(veri_data.root, 'veri776', tmp_path, 'train.amp', 'float8'))


def test_the_compile_switch_compiles_the_model_in_place(veri_data, tmp_path):
    engine = build_engine(tiny_config(veri_data.root, 'veri776', tmp_path, 'train.compile', True))
    assert engine.model._compiled_call_impl is not None
    assert all(not key.startswith('_orig_mod') for key in engine.model.state_dict())


def test_checkpoints_are_plain_data_that_torchreids_own_loaders_read(veri_data, tmp_path):
    engine = build_engine(tiny_config(veri_data.root, 'veri776', tmp_path))
    engine.run(save_dir=str(tmp_path / 'run'), max_epoch=1, print_freq=1, ranks=[1])
    checkpoint = str(tmp_path / 'run' / 'model' / 'model.pth.tar-1')
    state = torch.load(checkpoint, map_location='cpu', weights_only=True)
    assert type(state['rank1']) is float
    fresh = build_engine(tiny_config(veri_data.root, 'veri776', tmp_path))
    assert torchreid.utils.resume_from_checkpoint(checkpoint, fresh.model, fresh.optimizer, fresh.scheduler) == 1
    torchreid.utils.load_pretrained_weights(fresh.model, checkpoint)
    for key, value in engine.model.state_dict().items():
        assert torch.equal(fresh.model.state_dict()[key], value), key


@pytest.mark.parametrize('dataset', ['market1501', 'dukemtmcreid'])
def test_the_engine_trains_and_tests_on_torchreids_own_market_and_duke_readers(dataset, tmp_path, capsys):
    from dcal_plugin.demo_data import build_demo_data

    from .conftest import TINY_DATA

    data = build_demo_data(tmp_path / 'data', dataset, **TINY_DATA)
    engine = build_engine(tiny_config(data.root, dataset, tmp_path))
    assert engine.datamanager.num_train_pids == TINY_DATA['num_train_ids']
    engine.run(save_dir=str(tmp_path / 'run'), max_epoch=1, print_freq=1, ranks=[1])
    assert (tmp_path / 'run' / 'model' / 'model.pth.tar-1').is_file()
    out = capsys.readouterr().out
    assert f'Evaluating {dataset}' in out and re.search(r'Rank-1\s*:\s*[\d.]+%', out)


@pytest.mark.parametrize('rerank', [False, True])
def test_the_summary_scores_each_branch_from_the_final_tests_own_features_with_its_reranking(
        veri_data, tmp_path, monkeypatch, rerank):
    import dcal_plugin.torchreid as dcal_torchreid
    from dcal_plugin.torchreid import DCALEngine

    extracted, tested = [], []
    extract, evaluate = DCALEngine.extract_features, torchreid.engine.Engine._evaluate
    monkeypatch.setattr(DCALEngine, 'extract_features', lambda self, x: extracted.append(len(x)) or extract(self, x))
    monkeypatch.setattr(torchreid.engine.Engine, '_evaluate',
                        lambda self, **kwargs: tested.append(evaluate(self, **kwargs)) or tested[-1])
    cfg = tiny_config(veri_data.root, 'veri776', tmp_path / 'log', 'test.rerank', rerank)
    results = dcal_torchreid.run(cfg)['veri776']
    [(rank1, mAP)] = tested  # torchreid's own final test of the retrieval feature SA+GLCA
    assert results['SA+GLCA'].mAP == pytest.approx(mAP, abs=1e-6)
    assert results['SA+GLCA'].cmc[0] == pytest.approx(rank1, abs=1e-6)
    assert sum(extracted) == len(veri_data.split('query')) + len(veri_data.split('gallery'))  # extracted once
