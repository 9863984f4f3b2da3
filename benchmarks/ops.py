"""Benchmark of lsa's ops: compiled kernel vs the pure-PyTorch reference.

For every registered :class:`Case` it prints forward and forward+backward time and
peak memory growth, on CPU and (when present) CUDA; on CUDA also the achieved
bandwidth of the forward against a measured device copy and the vendor's spec-sheet HBM
bandwidth (``SPEC_PEAK_GBS``: H100 SXM 3.35 TB/s, H200 4.8 TB/s). Not a test: nothing is
asserted.

    python benchmarks/ops.py                 # standard sizes, CPU (+ CUDA if available)
    python benchmarks/ops.py --quick         # small sizes
    python benchmarks/ops.py --ops aggregation --device cpu --markdown

CPU peak memory: each (case, implementation) runs once in a fresh subprocess and the
growth of the peak RSS (``VmHWM``) over the inputs is reported (torch allocations are invisible
to tracemalloc). CUDA: ``torch.cuda.max_memory_allocated`` growth.

Adding an op: append a :class:`Case` to ``CASES`` (see the SAN cases below).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple

import torch
from torch import Tensor

Inputs = Tuple[Sequence[Tensor], Tensor]  # (differentiable inputs, grad of the output)


@dataclass
class Case:
    """One op at one size.

    Attributes:
        op: Op name (``--ops`` filter).
        size: ``quick -> description``, e.g. ``'SAN (N=8, C=256, 28x28, k=7, Cw=32, reflect)'``.
        make: ``(device, dtype, quick) -> (inputs, grad_output)``; inputs require grad.
        kernel: The public lsa function applied to ``*inputs``.
        reference: The reference applied to ``*inputs``.
        fwd_bytes: Compulsory forward traffic in bytes (inputs + output) for the roofline.
    """

    op: str
    size: Callable[[bool], str]
    make: Callable[[str, torch.dtype, bool], Inputs]
    kernel: Callable[..., Tensor]
    reference: Callable[..., Tensor]
    fwd_bytes: Callable[[Sequence[Tensor], Tensor], int]


def _io_bytes(inputs: Sequence[Tensor], grad: Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in inputs) + grad.numel() * grad.element_size()


CASES: List[Case] = []


# --- SAN (aggregation / subtraction / subtraction2) ----------------------------------------
def san_cases() -> List[Case]:
    """SAN standard size: N=8, C=256, 28x28, k=7, Cw=32, reflect (stage-2-like)."""
    from lsa.ops import aggregation, subtraction, subtraction2
    from lsa.ops.reference import aggregation_ref, subtraction2_ref, subtraction_ref

    geom = (7, 1, 3, 1, 'reflect')  # SAN stages 1-4: k=7, pad 3, reflect

    def dims(quick):  # N, C, H(=W), Cw
        return (2, 64, 14, 8) if quick else (8, 256, 28, 32)

    def size(quick):
        N, C, H, Cw = dims(quick)
        return f'SAN (N={N}, C={C}, {H}x{H}, k=7, Cw={Cw}, reflect)'

    def make_agg(device, dtype, quick):
        N, C, H, Cw = dims(quick)
        x = torch.randn(N, C, H, H, device=device, dtype=dtype, requires_grad=True)
        w = torch.randn(N, Cw, 49, H * H, device=device, dtype=dtype, requires_grad=True)
        return (x, w), torch.randn(N, C, H, H, device=device, dtype=dtype)

    def make_sub2(device, dtype, quick):
        N, C, H, _ = dims(quick)
        x1, x2 = (torch.randn(N, C, H, H, device=device, dtype=dtype, requires_grad=True)
                  for _ in range(2))
        return (x1, x2), torch.randn(N, C, 49, H * H, device=device, dtype=dtype)

    def make_sub(device, dtype, quick):
        (x1, _), g = make_sub2(device, dtype, quick)
        return (x1,), g

    return [
        Case('aggregation', size, make_agg, lambda x, w: aggregation(x, w, *geom),
             lambda x, w: aggregation_ref(x, w, *geom), _io_bytes),
        Case('subtraction2', size, make_sub2, lambda a, b: subtraction2(a, b, *geom),
             lambda a, b: subtraction2_ref(a, b, *geom), _io_bytes),
        Case('subtraction', size, make_sub, lambda a: subtraction(a, *geom),
             lambda a: subtraction_ref(a, *geom), _io_bytes),
    ]


CASES += san_cases()


# --- ELSA -----------------------------------------------------------------------------------
def elsa_cases() -> List[Case]:
    """ELSA-Swin-T stage 1: batch 8 x 3 heads, Cg=32, 56x56, k=7, lam=0 (ghost_mul = 1)."""
    from lsa.ops import elsa
    from lsa.ops.reference import elsa_ref

    def dims(quick):  # batch, heads, Cg, H(=W)
        return (2, 3, 32, 14) if quick else (8, 3, 32, 56)

    def size(quick):
        B, G, Cg, H = dims(quick)
        return f'ELSA-Swin-T stage 1 (batch {B} x {G} heads, Cg={Cg}, {H}x{H}, k=7)'

    def make(device, dtype, quick):
        B, G, Cg, H = dims(quick)
        t = dict(device=device, dtype=dtype)
        v = torch.randn(B * G, Cg, H, H, **t).requires_grad_()
        a = torch.randn(B * G, 49, H, H, **t).softmax(1).requires_grad_()
        ghost = (0.02 * torch.randn(B * G, Cg, 7, 7, **t)).requires_grad_()  # per-head add ghost
        return (v, a, ghost), torch.randn(B * G, Cg, H, H, **t)

    return [Case('elsa', size, make, lambda v, a, g: elsa(v, a, v.new_ones(1, 1, 1, 1), g, 7),
                 lambda v, a, g: elsa_ref(v, a, v.new_ones(1, 1, 1, 1), g, 7), _io_bytes)]


CASES += elsa_cases()


# --- measurement ----------------------------------------------------------------------------
def _sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def _time(fn: Callable[[], object], device: str, repeat: int) -> float:
    """Median wall time in ms of ``fn`` after one warm-up call."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _step(case: Case, impl: str, inputs, grad, backward: bool) -> None:
    fn = case.kernel if impl == 'kernel' else case.reference
    for t in inputs:
        t.grad = None
    y = fn(*inputs)
    if backward:
        y.backward(grad)


def _rss_peak_mib() -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec(), so a child started by a
    # parent that already ran a big reference would report ~0 growth.
    try:
        with open('/proc/self/status') as f:
            return next(int(line.split()[1]) for line in f if line.startswith('VmHWM')) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cpu_peak_growth(op: str, impl: str, dtype: str, quick: bool) -> Tuple[float, float]:
    """(fwd, fwd+bwd) peak RSS growth in MiB, measured in a fresh subprocess."""
    cmd = [sys.executable, os.path.abspath(__file__), '--_mem', op, impl, dtype]
    cmd += ['--quick'] if quick else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    return res['fwd'], res['fwd_bwd']


def _mem_child(op: str, impl: str, dtype: str, quick: bool) -> None:
    case = next(c for c in CASES if c.op == op)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    inputs, grad = case.make('cpu', getattr(torch, dtype), quick)
    base = _rss_peak_mib()
    fn = case.kernel if impl == 'kernel' else case.reference
    y = fn(*inputs)
    fwd = _rss_peak_mib() - base
    y.backward(grad)
    print(json.dumps({'fwd': fwd, 'fwd_bwd': _rss_peak_mib() - base}))


def _cuda_peak_growth(case: Case, impl: str, inputs, grad) -> Tuple[float, float]:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn = case.kernel if impl == 'kernel' else case.reference
    y = fn(*inputs)
    torch.cuda.synchronize()
    fwd = (torch.cuda.max_memory_allocated() - base) / 2**20
    y.backward(grad)
    torch.cuda.synchronize()
    both = (torch.cuda.max_memory_allocated() - base) / 2**20
    del y
    for t in inputs:
        t.grad = None
    return fwd, both


def _copy_bandwidth() -> float:
    """Measured device-to-device copy bandwidth in GB/s (read + write of 2 GiB)."""
    src = torch.empty(2**29, device='cuda')  # 2 GiB fp32
    return 2 * 2**31 / _time(src.clone, 'cuda', 5) / 1e6


SPEC_PEAK_GBS = {'H100': 3350.0, 'H200': 4800.0}  # GB/s, NVIDIA data sheets (H100 SXM5, H200)


def measure(case: Case, device: str, dtype: str, quick: bool, repeat: int,
            copy_gbs: float | None = None) -> dict:
    """Times and peak memory of one case, kernel and reference."""
    row = dict(op=case.op, size=case.size(quick), device=device, dtype=dtype)
    inputs, grad = case.make(device, getattr(torch, dtype), quick)
    for impl in ('kernel', 'reference'):
        for backward, key in ((False, 'fwd'), (True, 'fwd_bwd')):
            row[f'{impl}_{key}_ms'] = _time(
                lambda: _step(case, impl, inputs, grad, backward), device, repeat)  # noqa: B023
        if device == 'cpu':
            peaks = _cpu_peak_growth(case.op, impl, dtype, quick)
        else:
            peaks = _cuda_peak_growth(case, impl, inputs, grad)
        row[f'{impl}_fwd_mib'], row[f'{impl}_fwd_bwd_mib'] = peaks
    # the output (and the input gradients) are part of any implementation's peak; for ops whose
    # output is k*k times the input (subtraction) the workspace beyond them is the fair measure
    row['output_mib'] = grad.numel() * grad.element_size() / 2**20
    if device == 'cuda':
        name = torch.cuda.get_device_name()
        row.update(fwd_gbs=case.fwd_bytes(inputs, grad) / row['kernel_fwd_ms'] / 1e6,
                   copy_gbs=copy_gbs,
                   spec_gbs=next((v for k, v in SPEC_PEAK_GBS.items() if k in name), None))
    return row


def run(ops, devices, dtypes, quick: bool, repeat: int) -> List[dict]:
    rows = []
    for device in devices:
        copy_gbs = _copy_bandwidth() if device == 'cuda' else None
        for case in CASES:
            if ops and case.op not in ops:
                continue
            for dtype in dtypes:
                if device == 'cpu' and dtype == 'float16':
                    continue
                rows.append(measure(case, device, dtype, quick, repeat, copy_gbs))
                _print_row(rows[-1])
    return rows


def _ratio(a: float, b: float) -> str:
    return f'{a / b:.1f}x' if b > 0 else 'n/a'


def _print_row(r: dict) -> None:
    print(f"{r['op']:<13} {r['device']:<4} {r['dtype']:<8} | fwd {r['kernel_fwd_ms']:9.2f} ms "
          f"(ref {r['reference_fwd_ms']:9.2f}, {_ratio(r['reference_fwd_ms'], r['kernel_fwd_ms'])})"
          f" | fwd+bwd {r['kernel_fwd_bwd_ms']:9.2f} ms (ref {r['reference_fwd_bwd_ms']:9.2f}, "
          f"{_ratio(r['reference_fwd_bwd_ms'], r['kernel_fwd_bwd_ms'])}) | peak fwd+bwd "
          f"{r['kernel_fwd_bwd_mib']:8.1f} MiB (ref {r['reference_fwd_bwd_mib']:8.1f}, "
          f"1/{r['reference_fwd_bwd_mib'] / max(r['kernel_fwd_bwd_mib'], 1e-9):.1f}; output "
          f"{r['output_mib']:.1f} MiB)", flush=True)
    if 'fwd_gbs' in r:
        spec = f", {100 * r['fwd_gbs'] / r['spec_gbs']:.0f}% of spec" if r['spec_gbs'] else ''
        print(f"{'':13} fwd bandwidth {r['fwd_gbs']:.0f} GB/s = "
              f"{100 * r['fwd_gbs'] / r['copy_gbs']:.0f}% of measured copy "
              f"({r['copy_gbs']:.0f} GB/s){spec}")


def markdown(rows: List[dict]) -> str:
    head = ('| op | size | device | dtype | fwd ms (kernel / ref) | fwd+bwd ms (kernel / ref) '
            '| speed-up fwd / fwd+bwd | peak growth fwd+bwd MiB (kernel / ref) | memory ratio '
            '| output MiB |')
    lines = [head, '|' + '---|' * 10]
    for r in rows:
        lines.append(
            f"| {r['op']} | {r['size']} | {r['device']} | {r['dtype']} "
            f"| {r['kernel_fwd_ms']:.1f} / {r['reference_fwd_ms']:.1f} "
            f"| {r['kernel_fwd_bwd_ms']:.1f} / {r['reference_fwd_bwd_ms']:.1f} "
            f"| {_ratio(r['reference_fwd_ms'], r['kernel_fwd_ms'])} / "
            f"{_ratio(r['reference_fwd_bwd_ms'], r['kernel_fwd_bwd_ms'])} "
            f"| {r['kernel_fwd_bwd_mib']:.0f} / {r['reference_fwd_bwd_mib']:.0f} "
            f"| 1/{r['reference_fwd_bwd_mib'] / max(r['kernel_fwd_bwd_mib'], 1e-9):.1f} "
            f"| {r['output_mib']:.0f} |")
    return '\n'.join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--quick', action='store_true', help='small sizes')
    p.add_argument('--ops', nargs='*', default=None, help='op names (default: all)')
    p.add_argument('--device', choices=['cpu', 'cuda', 'all'], default='all')
    p.add_argument('--dtypes', nargs='*', default=['float32'],
                   help='e.g. float32 bfloat16 (float16 runs on CUDA only)')
    p.add_argument('--repeat', type=int, default=5, help='timed repetitions (median)')
    p.add_argument('--markdown', action='store_true', help='also print a markdown table')
    p.add_argument('--json', help='write the rows to this file')
    p.add_argument('--_mem', nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._mem:
        _mem_child(*args._mem, quick=args.quick)
        return
    devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    if args.device != 'all':
        devices = [args.device]
    print(f'torch {torch.__version__}, {torch.get_num_threads()} CPU threads, '
          f'{os.cpu_count()} cores' + (f', {torch.cuda.get_device_name()}'
                                       if 'cuda' in devices else ''))
    rows = run(args.ops, devices, args.dtypes, args.quick, args.repeat)
    if args.markdown:
        print(markdown(rows))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)


if __name__ == '__main__':
    main()
