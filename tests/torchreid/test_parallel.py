"""DCALEngine trains a model wrapped torchreid's way (nn.DataParallel, before or after the engine) or in DDP, plain
checkpoints."""
import socket

import pytest
import torch
from torch import nn

pytest.importorskip('torchreid')

from dcal_plugin.torchreid import DCALEngine, build_dcal_reid, build_engine, evaluate_branches  # noqa: E402
from dcal_plugin.torchreid.config import model_kwargs  # noqa: E402
from dcal_plugin.torchreid.runner import data_parallel  # noqa: E402

from .helpers import tiny_config  # noqa: E402


@pytest.fixture
def process_group():
    """A one-process gloo group, as DistributedDataParallel needs one; destroyed after the test."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    torch.distributed.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def wrap(engine: DCALEngine, how: str) -> DCALEngine:
    """The engine training ``engine.model`` wrapped as ``how`` says: a new engine around the wrapper, or the same
    one."""
    if how == 'DataParallel, then the engine':  # torchreid's scripts/main.py
        return DCALEngine(engine.datamanager, nn.DataParallel(engine.model), engine.optimizer,
                          scheduler=engine.scheduler)
    if how == 'the engine, then DataParallel':
        engine.model = nn.DataParallel(engine.model)
        return engine
    return DCALEngine(engine.datamanager, nn.parallel.DistributedDataParallel(engine.model), engine.optimizer,
                      scheduler=engine.scheduler)


@pytest.mark.parametrize('how', ['DataParallel, then the engine', 'the engine, then DataParallel',
                                 'DistributedDataParallel, then the engine'])
def test_the_engine_trains_a_wrapped_model_and_saves_the_plain_models_keys(veri_data, tmp_path, how, request):
    if how.startswith('Distributed'):
        request.getfixturevalue('process_group')
    cfg = tiny_config(veri_data.root, 'veri776', tmp_path)
    engine = build_engine(cfg)
    plain = engine.model
    engine = wrap(engine, how)
    wrapper_calls = []  # the mode of the plain model at each call of the wrapper
    engine.model.register_forward_hook(lambda module, args, out: wrapper_calls.append(plain.training))
    before = {name: parameter.detach().clone() for name, parameter in plain.named_parameters()}
    engine.run(save_dir=str(tmp_path / 'run'), max_epoch=1, print_freq=1, ranks=[1])

    assert True in wrapper_calls and False in wrapper_calls  # the train steps and the test ran through the wrapper
    optimized = {id(parameter) for group in engine.optimizer.param_groups for parameter in group['params']}
    for name, parameter in plain.named_parameters():
        assert id(parameter) in optimized and not torch.equal(parameter, before[name]), name
    state = torch.load(tmp_path / 'run' / 'model' / 'model.pth.tar-1', map_location='cpu', weights_only=True)
    fresh = build_dcal_reid(num_classes=plain.num_classes, **model_kwargs(cfg))
    fresh.load_state_dict(state['state_dict'], strict=True)
    for key, value in plain.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    assert engine.dcal_reid is plain and list(evaluate_branches(engine)['veri776']) == ['SA', 'GLCA', 'SA+GLCA']


def test_the_engine_refuses_a_wrapped_model_that_is_not_dcal(veri_data, tmp_path):
    engine = build_engine(tiny_config(veri_data.root, 'veri776', tmp_path))
    with pytest.raises(TypeError, match='got DataParallel of Linear'):
        DCALEngine(engine.datamanager, nn.DataParallel(nn.Linear(2, 2)), engine.optimizer, scheduler=engine.scheduler)


@pytest.mark.parametrize('gpus, use_gpu, wrapped', [(2, True, True), (1, True, False), (2, False, False)])
def test_the_run_wraps_in_data_parallel_on_several_gpus(monkeypatch, gpus, use_gpu, wrapped):
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: gpus)
    model = nn.Linear(2, 2)
    assert isinstance(data_parallel(model, use_gpu), nn.DataParallel) == wrapped
