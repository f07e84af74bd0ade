"""Measuring tools for ``benchmarks/``: interleaved timing, labelled shares, FLOP counting, peak memory, the machine.

Everything here treats the two models of a comparison the same way: the same timer, the same
FLOP formulas (attention included, fused or not), the same memory accounting.
"""
import math
import os
import platform
import resource
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import timm
import torch
from torch.utils import flop_counter

# How attention is counted (stated in the JSON). torch registers FLOP formulas for the CUDA SDPA
# kernels but not for the CPU one, so on CPU timm's fused attention would count as 0 FLOPs while
# a manual softmax(QKᵀ)V counts as two bmm. The CPU kernels get torch's own SDPA formulas, which
# count exactly the two bmm (forward) / five bmm (backward) of the unfused computation.
def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                            **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _onednn_linear_flop(input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * math.prod(input_shape[:-1]) * weight_shape[0] * weight_shape[1]


_CPU_SDPA_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop,
}
# DCAL's CPU attention maps multiply through oneDNN's linear op (``attention.onednn_linear``),
# which torch leaves uncounted: it counts as the ``mm`` it computes, always.
_ALWAYS_COUNTED = ({torch.ops.mkldnn._linear_pointwise: _onednn_linear_flop}
                   if hasattr(torch.ops.mkldnn, '_linear_pointwise') else {})
SDPA_KERNELS = dict(flash='aten::_scaled_dot_product_flash_attention', efficient='aten::_scaled_dot_product_efficient',
                    cudnn='aten::_scaled_dot_product_cudnn_attention', math='aten::_scaled_dot_product_attention_math')
ATTENTION_COUNTING = (
    'torch.utils.flop_counter.FlopCounterMode, one multiply-add = 2 FLOPs; matmul, conv and attention only '
    '(softmax, norms, GELU, adds are not counted, on either side). Fused SDPA counts as its two bmm '
    '(QK^T, PV) forward and five bmm backward (torch\'s own sdpa_flop / sdpa_backward_flop, registered '
    'here for the CPU kernel aten._scaled_dot_product_flash_attention_for_cpu[_backward], which torch '
    'leaves uncounted), i.e. exactly what the unfused bmm path counts for the same shapes. oneDNN\'s '
    'linear op (mkldnn::_linear_pointwise, through which DCAL\'s CPU attention maps multiply) counts as '
    'the mm it computes.')


def count_flops(fn: Callable[[], object], count_cpu_sdpa: bool = True) -> int:
    """Total FLOPs of one call of ``fn`` (attention counted as described in ``ATTENTION_COUNTING``).

    ``count_cpu_sdpa=False`` reproduces torch's default on CPU, where the fused kernel counts 0.
    """
    mapping = {**_ALWAYS_COUNTED, **(_CPU_SDPA_FORMULAS if count_cpu_sdpa else {})}
    with flop_counter.FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return counter.get_total_flops()


def time_interleaved(fns: Dict[str, Callable[[], object]], repeats: int, warmup: int, sync: Callable[[], None],
                     clock: Callable[[], float] = time.perf_counter, max_foreign_share: Optional[float] = None,
                     max_rounds: Optional[int] = None) -> Tuple[Dict[str, List[float]], Dict[str, object]]:
    """Seconds per call of each ``fn``, the calls alternating (A B A B ...) so load drift hits all alike.

    ``clock``: ``time.perf_counter`` (wall time, the default) or ``time.thread_time`` (CPU time of
    the calling thread: with one torch thread, the work done, whatever else the machine runs).
    On a shared machine, a round (one call of each ``fn``) during which other processes took more
    than ``max_foreign_share`` of the CPU (see :class:`CpuLoad`) is measured again, up to
    ``max_rounds`` rounds in all; if too few quiet rounds were had, the quietest rounds are kept.
    Returns the times of the kept rounds and a summary of the rounds' load and of the minor page
    faults per call (fresh memory pages the process touched: what an allocator that hands memory
    back to the system and maps it anew costs).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
            sync()
    max_rounds = max_rounds or repeats
    rounds = []
    while len(rounds) < max_rounds:
        times, faults = {}, {}
        with CpuLoad() as load:
            for name, fn in fns.items():
                sync()
                faults_before = _minor_page_faults()
                start = clock()
                fn()
                sync()
                times[name] = clock() - start
                faults[name] = _minor_page_faults() - faults_before
        rounds.append((load.share or 0.0, times, faults))
        quiet = [r for r in rounds if max_foreign_share is None or r[0] <= max_foreign_share]
        if len(quiet) >= repeats:
            break
    kept = quiet if len(quiet) >= repeats else sorted(rounds, key=lambda r: r[0])[:repeats]
    summary = dict(rounds=len(rounds), kept=len(kept), max_foreign_share=max_foreign_share,
                   foreign_share_of_kept=[round(r[0], 3) for r in kept],
                   minor_page_faults_median={name: median([r[2][name] for r in kept]) for name in fns})
    return {name: [r[1][name] for r in kept] for name in fns}, summary


def labelled_share(fn: Callable[[], object], label: str, device: torch.device, repeats: int,
                   sync: Callable[[], None], clock: Callable[[], float] = time.perf_counter,
                   max_foreign_share: Optional[float] = None) -> float:
    """Median share of one call of ``fn`` spent inside ``torch.profiler.record_function(label)``, profiled in place.

    Each call runs under ``torch.profiler``; the share is the labelled ranges' time (CPU time on
    CPU, the time of their kernels on CUDA) over the call's ``clock`` time. On CUDA the profiler
    records each range twice, on the CPU and as a ``gpu_user_annotation`` on the GPU's timeline;
    only the CPU one (whose device time sums its kernels') is counted. A call that records no
    range named ``label`` raises ``RuntimeError``: the labelled code did not run (or lost its
    label), and its share is unknown rather than 0. Calls during which other processes took more
    than ``max_foreign_share`` of the CPU are repeated (up to 4 × ``repeats`` calls), as in
    :func:`time_interleaved`.
    """
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    rounds = []
    while len(rounds) < 4 * repeats:
        with CpuLoad() as load, profile(activities=activities) as prof:
            sync()
            start = clock()
            fn()
            sync()
            total = clock() - start
        ranges = [event for event in prof.events()
                  if event.name == label and event.device_type == torch.autograd.DeviceType.CPU]
        if not ranges:
            raise RuntimeError(f'the call ran no code labelled {label!r} (torch.profiler.record_function): '
                               'its share cannot be measured')
        spent_us = sum(e.device_time_total if device.type == 'cuda' else e.cpu_time_total for e in ranges)
        rounds.append((load.share or 0.0, spent_us * 1e-6 / total))
        if sum(max_foreign_share is None or share <= max_foreign_share for share, _ in rounds) >= repeats:
            break
    return median([share for _, share in sorted(rounds)[:repeats]])


def sdpa_kernels(fn: Callable[[], object]) -> Dict[str, int]:
    """How many times one call of ``fn`` ran each kernel of ``F.scaled_dot_product_attention``, forward and backward.

    Keys: ``flash``, ``efficient``, ``cudnn`` (the fused kernels; CPU's is ``flash``) and ``math``
    (the unfused fallback), from the aten ops that ``torch.profiler`` records.
    """
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    counts = dict.fromkeys(SDPA_KERNELS, 0)
    for event in prof.events():
        for kernel, prefix in SDPA_KERNELS.items():
            counts[kernel] += event.name.startswith(prefix)
    return counts


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def live_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (parameters, gradients, optimiser state, inputs)."""
    seen, total = set(), 0
    for tensor in tensors:
        if not isinstance(tensor, torch.Tensor):
            continue
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def peak_step_bytes(step: Callable[[], object], resident: Callable[[], int], device: torch.device) -> int:
    """Peak bytes allocated during one call of ``step``, counting what is resident when it starts.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. CPU (torch has no
    caching allocator statistics there): every allocation and free of torch's CPU allocator inside
    the call, as recorded by ``torch.profiler`` with ``profile_memory=True``, summed in time order;
    the peak of that running sum plus ``resident()`` (bytes live at the start: parameters,
    optimiser state, inputs — gradients are freed before the call).
    """
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    from torch.profiler import ProfilerActivity, profile
    start = resident()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    cpu = torch._C._autograd.DeviceType.CPU
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == '[memory]' and e.device_type() == cpu]
    running = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        running += event.nbytes()
        peak = max(peak, running)
    return start + peak


class CpuLoad:
    """CPU time other processes took from this machine while a measurement ran (``/proc/stat``; Linux).

    ``share`` is the fraction of all cores' time, during the interval, that was busy but not spent
    by this process: 0 on an idle machine, near 1 when others saturate every core.
    """

    def __enter__(self) -> 'CpuLoad':
        self._busy0, self._total0 = _proc_stat()
        self._own0 = _own_cpu_seconds()
        self.share = None
        return self

    def __exit__(self, *exc) -> None:
        busy1, total1 = _proc_stat()
        own1 = _own_cpu_seconds()
        if total1 is None or total1 <= self._total0:
            return
        tick = os.sysconf('SC_CLK_TCK')
        foreign = (busy1 - self._busy0) - (own1 - self._own0) * tick
        self.share = max(0.0, min(1.0, foreign / (total1 - self._total0)))


def _minor_page_faults() -> int:
    """Minor page faults of this process so far (``getrusage``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _proc_stat():
    try:
        with open('/proc/stat') as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return None, None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def environment(device: torch.device, autocast_dtype: Optional[torch.dtype]) -> Dict:
    """The machine and software a measurement ran on: device name, versions, threads, malloc settings, load."""
    cpu_model = platform.processor()
    try:
        with open('/proc/cpuinfo') as info:
            cpu_model = next(line.split(':', 1)[1].strip() for line in info if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return dict(
        device=device.type, device_name=torch.cuda.get_device_name(device) if device.type == 'cuda' else cpu_model,
        torch=torch.__version__, timm=timm.__version__, python=platform.python_version(),
        threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
        allocator_env={key: value for key, value in os.environ.items() if key.startswith('MALLOC_')},
        dtype='float32' if autocast_dtype is None else f'autocast {autocast_dtype}'.replace('torch.', ''),
        load_average_at_start=os.getloadavg())
