"""Model-level CPU benchmark: SAN (lsa, fused and unfused attention) vs ResNet-26/38/50.

One run measures every model side by side (same machine state) and prints img/s and
peak memory for inference (``--batch-infer``, default 8) and one SGD training step
(``--batch-train``, default 4) at 224x224, fp32, with ``--threads`` (default 2) torch
threads. Every (model, mode) runs in a fresh subprocess: peak memory is the growth of
the peak RSS (``VmHWM``) over the process state after building the model and its input;
speed is the median of ``--iters`` timed iterations after one warm-up. Not a test.

Models are backbone + global average pooling + a 1000-way linear layer. ResNet-26/38
are mmpretrain's ResNet with SAN's bottleneck layer counts (1, 2, 4, 1) and (2, 3, 5, 2)
(the baselines of the SAN paper); ResNet-50 is mmpretrain's.

    python benchmarks/san.py                     # all models
    python benchmarks/san.py --models san10-pairwise resnet50 --iters 3
    python benchmarks/san.py --malloc retain     # glibc keeps freed memory (allocator.py)
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
from allocator import MODES as MALLOC_MODES
from allocator import minor_faults, worker_env
from torch import nn

SAN_MODELS = [f'san{d}-{t}' for t in ('pairwise', 'patchwise') for d in (10, 15, 19)]
MODELS = SAN_MODELS + ['san10-pairwise-unfused', 'san10-patchwise-unfused',
                       'resnet26', 'resnet38', 'resnet50']
RESNET_LAYERS = {26: (1, 2, 4, 1), 38: (2, 3, 5, 2)}


def build(name: str) -> nn.Module:
    """``name`` -> classifier (N, 3, 224, 224) -> (N, 1000)."""
    import lsa.compat_apply  # noqa: F401  (lsa.compat.apply(): mmpretrain imports on CPU torch)
    if name.startswith('resnet'):
        from mmpretrain.models.backbones import ResNet
        from mmpretrain.models.backbones.resnet import Bottleneck
        depth = int(name[len('resnet'):])
        if depth in RESNET_LAYERS:
            ResNet.arch_settings[depth] = (Bottleneck, RESNET_LAYERS[depth])
        backbone = ResNet(depth=depth)
    else:
        from lsa.models.backbones.san import SAN
        arch, _, variant = name.partition('-')
        sa_type, _, unfused = variant.partition('-')
        backbone = SAN(arch=arch, sa_type=sa_type,
                       attn_cfg=dict(type='lsa.SANAttention', fused=not unfused))
    return nn.Sequential(backbone, _Last(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(2048, 1000))


class _Last(nn.Module):
    def forward(self, outs):
        return outs[-1] if isinstance(outs, (tuple, list)) else outs


def _peak_mib() -> float:
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith('VmHWM')) / 1024


def measure(name: str, mode: str, batch: int, iters: int, threads: int) -> dict:
    """Run in the subprocess: img/s (median) and peak RSS growth of one model and mode."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(name)
    x = torch.randn(batch, 3, 224, 224)
    target = torch.randint(0, 1000, (batch,))
    params = sum(p.numel() for p in model.parameters())
    if mode == 'train':
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step():
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), target).backward()
            opt.step()
    else:
        model.eval()

        def step():
            with torch.inference_mode():
                model(x)
    base = _peak_mib()
    times, faults = [], []
    for i in range(iters + 1):
        t0, f0 = time.perf_counter(), minor_faults()
        step()
        if i:  # the first iteration is the warm-up
            times.append(time.perf_counter() - t0)
            faults.append(minor_faults() - f0)
    return dict(model=name, mode=mode, params=params, img_s=batch / statistics.median(times),
                peak_mib=_peak_mib() - base, faults=statistics.median(faults))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--models', nargs='+', default=MODELS, choices=MODELS)
    ap.add_argument('--batch-infer', type=int, default=8)
    ap.add_argument('--batch-train', type=int, default=4)
    ap.add_argument('--iters', type=int, default=3)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--malloc', choices=MALLOC_MODES, default='glibc',
                    help="glibc's defaults, or 'retain': freed memory is reused, not faulted in "
                         'again (every model alike; see benchmarks/allocator.py)')
    ap.add_argument('--_child', nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        name, mode = args._child
        batch = args.batch_train if mode == 'train' else args.batch_infer
        print(json.dumps(measure(name, mode, batch, args.iters, args.threads)))
        return
    rows = {}
    for name in args.models:
        for mode in ('infer', 'train'):
            cmd = [sys.executable, __file__, '--_child', name, mode, '--iters', str(args.iters),
                   '--threads', str(args.threads), '--batch-infer', str(args.batch_infer),
                   '--batch-train', str(args.batch_train)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                 env=worker_env(args.malloc)).stdout
            r = json.loads(out.strip().splitlines()[-1])
            rows.setdefault(name, {})[mode] = r
            print(f'# {name} {mode}: {r["img_s"]:.2f} img/s, peak +{r["peak_mib"]:.0f} MiB, '
                  f'{r["faults"]:.0f} page faults per iteration (malloc {args.malloc})',
                  file=sys.stderr, flush=True)
    ref = rows.get('resnet50')
    print(f'| model | params | infer img/s (b{args.batch_infer}) | train img/s '
          f'(b{args.batch_train}) | peak MiB infer / train | vs ResNet-50: infer / train '
          f'speed, infer / train memory | page faults per iteration infer / train |')
    print('|---|---|---|---|---|---|---|')
    for name, r in rows.items():
        i, t = r['infer'], r['train']
        ratio = '—' if ref is None else (
            f'{i["img_s"] / ref["infer"]["img_s"]:.2f}x / {t["img_s"] / ref["train"]["img_s"]:.2f}x'
            f', {i["peak_mib"] / ref["infer"]["peak_mib"]:.2f}x / '
            f'{t["peak_mib"] / ref["train"]["peak_mib"]:.2f}x')
        print(f'| {name} | {i["params"] / 1e6:.1f} M | {i["img_s"]:.2f} | {t["img_s"]:.2f} | '
              f'{i["peak_mib"]:.0f} / {t["peak_mib"]:.0f} | {ratio} | '
              f'{i["faults"]:.0f} / {t["faults"]:.0f} |')


if __name__ == '__main__':
    main()
