"""lsa backbones against the backbones they replace (their hosts), side by side in one run.

For every pair it times inference (eval, no grad) and a training step (forward,
``sum of output means`` loss, backward, SGD step) of the lsa model and of its
host, and measures the peak RSS growth of the training step. Each (model, mode)
runs in a fresh subprocess (so RSS peaks do not mix); lsa model and host
alternate, ``--repeats`` times, and the medians are compared. Ratios are the
headline: speed ratio = host time / lsa time (> 1: lsa is faster), memory ratio
= lsa peak / host peak (< 1: lsa is leaner). Not a test: nothing is asserted.

    python benchmarks/hosts.py                    # all pairs
    python benchmarks/hosts.py --quick            # the -T pairs, fewer iterations
    python benchmarks/hosts.py --pairs lesa-r50 --repeats 3 --threads 2
    python benchmarks/hosts.py --pairs elsa-swin-t --compile   # + torch.compile rows
    python benchmarks/hosts.py --quick --malloc retain   # glibc keeps freed memory (allocator.py)

Hosts are mmpretrain backbones (Swin, ResNet-50, DeiT, TNT), torchvision's
WRN-50-2, and lsa's own PVT with the plain MLP (LocalViT-PVT's baseline:
the same model with the locality feed-forward swapped back).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch
import torch.nn as nn
from allocator import MODES as MALLOC_MODES
from allocator import minor_faults, worker_env

import lsa.compat_apply  # noqa: F401  (mmpretrain/torchvision import on CPU-only torch)

Builder = Callable[[], nn.Module]


def _lsa(type_: str, **kw) -> Builder:
    def build() -> nn.Module:
        from lsa.registry import MODELS
        return MODELS.build(dict(type=type_, **kw))
    return build


def _mmpretrain(type_: str, **kw) -> Builder:
    def build() -> nn.Module:
        from mmengine.registry import init_default_scope
        from mmpretrain.registry import MODELS
        init_default_scope('mmpretrain')
        return MODELS.build(dict(type=type_, **kw))
    return build


def _torchvision(name: str) -> Builder:
    def build() -> nn.Module:
        import torchvision
        return getattr(torchvision.models, name)()
    return build


_SWIN = dict(out_indices=(3,), drop_path_rate=0.0)
_LFF_PVT = 'lsa.LocalViTPVT'

#: name -> (lsa model, host, host description)
PAIRS: dict[str, tuple[Builder, Builder, str]] = {
    'elsa-swin-t': (_lsa('lsa.ELSASwin', arch='tiny', **_SWIN),
                    _mmpretrain('SwinTransformer', arch='tiny', **_SWIN), 'Swin-T'),
    'elsa-swin-s': (_lsa('lsa.ELSASwin', arch='small', **_SWIN),
                    _mmpretrain('SwinTransformer', arch='small', **_SWIN), 'Swin-S'),
    'elsa-swin-b': (_lsa('lsa.ELSASwin', arch='base', **_SWIN),
                    _mmpretrain('SwinTransformer', arch='base', **_SWIN), 'Swin-B'),
    'lesa-r50': (_lsa('lsa.LESAResNet', arch='r50', out_indices=(3,)),
                 _mmpretrain('ResNet', depth=50), 'ResNet-50'),
    'lesa-wrn50': (_lsa('lsa.LESAResNet', arch='wrn50', out_indices=(3,)),
                   _torchvision('wide_resnet50_2'), 'WRN-50-2 (torchvision)'),
    'localvit-t': (_lsa('lsa.LocalViT', arch='tiny'),
                   _mmpretrain('VisionTransformer', arch='deit-tiny'), 'DeiT-T'),
    'localvit-s': (_lsa('lsa.LocalViT', arch='small'),
                   _mmpretrain('VisionTransformer', arch='deit-small'), 'DeiT-S'),
    'localvit-pvt': (_lsa(_LFF_PVT, arch='tiny'),
                     _lsa(_LFF_PVT, arch='tiny', ffn_cfg=dict(type='lsa.Mlp')),
                     'PVT-T (lsa, MLP)'),
    'localvit-tnt': (_lsa('lsa.LocalViTTNT', arch='small'),
                     _mmpretrain('TNT', arch='s'), 'TNT-S'),
    'localvit-swin': (_lsa('lsa.LocalViTSwin', arch='tiny', **_SWIN),
                      _mmpretrain('SwinTransformer', arch='tiny', **_SWIN), 'Swin-T'),
}
QUICK = ('elsa-swin-t', 'lesa-r50', 'localvit-t')


def _rss_mb() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20


def _loss(out) -> torch.Tensor:
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return sum(o.float().mean() for o in outs if isinstance(o, torch.Tensor))


def worker(pair: str, side: str, mode: str, batch: int, size: int, iters: int,
           compile_: bool) -> dict:
    """Time one model in this process; returns medians (ms) and peak RSS growth (MB)."""
    lsa_b, host_b, _ = PAIRS[pair]
    torch.manual_seed(0)
    model = (lsa_b if side == 'lsa' else host_b)()
    if compile_:
        model.compile()
    x = torch.randn(batch, 3, size, size)
    times, cpu, faults = [], [], []
    if mode == 'infer':
        model.eval()
        rss0 = _rss_mb()
        with torch.no_grad():
            for _ in range(iters + 1):  # the first call warms up (and compiles)
                t0, c0, f0 = time.perf_counter(), time.process_time(), minor_faults()
                model(x)
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                faults.append(minor_faults() - f0)
    else:
        model.train()
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6)
        rss0 = _rss_mb()
        for _ in range(iters + 1):
            t0, c0, f0 = time.perf_counter(), time.process_time(), minor_faults()
            opt.zero_grad(set_to_none=True)
            _loss(model(x)).backward()
            opt.step()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            faults.append(minor_faults() - f0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0
    return dict(wall=1e3 * statistics.median(times[1:]), cpu=1e3 * statistics.median(cpu[1:]),
                first_ms=1e3 * times[0], peak_mb=max(peak, 0.0),
                faults=statistics.median(faults[1:]))


def _spawn(args: argparse.Namespace, pair: str, side: str, mode: str, compile_: bool) -> dict:
    batch = args.infer_batch if mode == 'infer' else args.train_batch
    cmd = [sys.executable, __file__, '--worker', pair, side, mode, '--threads', str(args.threads),
           '--iters', str(args.iters), '--size', str(args.size), '--infer-batch',
           str(args.infer_batch), '--train-batch', str(args.train_batch)]
    if compile_:
        cmd.append('--compile')
    res = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(args.malloc))
    if res.returncode != 0:
        raise RuntimeError(f'{pair}/{side}/{mode} (batch {batch}) failed:\n{res.stderr[-3000:]}')
    return json.loads(res.stdout.strip().splitlines()[-1])


def machine() -> str:
    load = os.getloadavg()
    return (f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores, '
            f'torch {torch.__version__}, threads {torch.get_num_threads()}, '
            f'load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} at start')


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--pairs', nargs='+', choices=sorted(PAIRS), default=None)
    p.add_argument('--quick', action='store_true', help=f'pairs {QUICK}, 2 timed iterations')
    p.add_argument('--repeats', type=int, default=1, help='fresh processes per (model, mode)')
    p.add_argument('--iters', type=int, default=None, help='timed iterations per process')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--infer-batch', type=int, default=8)
    p.add_argument('--train-batch', type=int, default=4)
    p.add_argument('--modes', nargs='+', choices=('infer', 'train'), default=('infer', 'train'))
    p.add_argument('--clock', choices=('wall', 'cpu'), default='wall',
                   help='wall time, or process CPU time (all threads; steadier on a shared '
                        'machine, use with --threads 1)')
    p.add_argument('--compile', action='store_true',
                   help='also time the lsa model under torch.compile (ratio to eager lsa)')
    p.add_argument('--malloc', choices=MALLOC_MODES, default='glibc',
                   help="glibc's defaults, or 'retain': freed memory is reused, not faulted in "
                        'again (both sides alike; see benchmarks/allocator.py)')
    p.add_argument('--worker', nargs=3, metavar=('PAIR', 'SIDE', 'MODE'), help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.iters is None:
        args.iters = 2 if args.quick else 5
    if args.worker:
        pair, side, mode = args.worker
        print(json.dumps(worker(pair, side, mode,
                                args.infer_batch if mode == 'infer' else args.train_batch,
                                args.size, args.iters, args.compile)))
        return
    pairs = args.pairs or (list(QUICK) if args.quick else list(PAIRS))
    print(f'machine: {machine()}')
    print(f'setting: fp32, {args.size}x{args.size}, inference batch {args.infer_batch}, '
          f'training step batch {args.train_batch}, {args.iters} timed iterations per process '
          f'(median), {args.repeats} process(es) per model and mode, lsa/host alternating, '
          f'{args.clock} clock, malloc {args.malloc}\n')
    sides = ['lsa', 'host'] + (['compiled'] if args.compile else [])
    rows = []
    for pair in pairs:
        r = {s: {m: [] for m in args.modes} for s in sides}
        for _ in range(args.repeats):
            for mode in args.modes:
                for side in sides:
                    res = _spawn(args, pair, 'lsa' if side == 'compiled' else side, mode,
                                 side == 'compiled')
                    r[side][mode].append(res)
        med = {s: {m: statistics.median(x[args.clock] for x in r[s][m]) for m in args.modes}
               for s in sides}
        peak = {s: statistics.median(x['peak_mb'] for x in r[s]['train'])
                for s in sides if 'train' in args.modes}
        flt = {s: {m: statistics.median(x['faults'] for x in r[s][m]) for m in args.modes}
               for s in sides}
        rows.append((pair, med, peak, flt))
        print(f'{pair}: ' + json.dumps({'ms': med, 'train_peak_mb': peak, 'page_faults': flt}),
              flush=True)

    cols = [f'{m} ms lsa / host' for m in args.modes] + [f'{m} speed' for m in args.modes]
    if 'train' in args.modes:
        cols += ['train peak MB lsa / host', 'train memory']
    if args.compile:
        cols += [f'compiled {m} speed-up' for m in args.modes]
    cols += [f'{m} page faults lsa / host' for m in args.modes]
    print('\n| lsa model / host | ' + ' | '.join(cols) + ' |')
    print('|---' * (len(cols) + 1) + '|')
    for pair, med, peak, flt in rows:
        cells = [f"{med['lsa'][m]:.0f} / {med['host'][m]:.0f}" for m in args.modes]
        cells += [f"{med['host'][m] / med['lsa'][m]:.2f}x" for m in args.modes]
        if 'train' in args.modes:
            cells += [f"{peak['lsa']:.0f} / {peak['host']:.0f}",
                      f"{peak['lsa'] / max(peak['host'], 1e-9):.2f}x"]
        if args.compile:
            cells += [f"{med['lsa'][m] / med['compiled'][m]:.2f}x" for m in args.modes]
        cells += [f"{flt['lsa'][m]:.0f} / {flt['host'][m]:.0f}" for m in args.modes]
        print(f'| {pair} / {PAIRS[pair][2]} | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
    main()
