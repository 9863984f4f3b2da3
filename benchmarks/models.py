"""Every lsa backbone variant next to its host network: params, FLOPs, speed, memory.

Each model runs in a fresh subprocess (so its peak RSS is its own) that builds the
ImageNet classifier, counts FLOPs with :mod:`lsa.analysis.flops` (batch 1), then times
inference (``no_grad``, eval) and one training step (forward + cross-entropy + backward,
train mode) on random images, after one warm-up pass. It reports medians, and the growth
of the process's peak RSS (``VmHWM``) over its RSS after building the model. Results go
to a markdown file (``--markdown``), a plot (``--plot``: img/s vs FLOPs, and memory) and
optionally JSON. Not a test: nothing is asserted.

    python benchmarks/models.py                           # every model, 224x224, CPU
    python benchmarks/models.py --quick                   # batch 1, 2 iterations, no training
    python benchmarks/models.py --models san10 ResNet-26 --batch 4 --iters 5
    python benchmarks/models.py --markdown docs/benchmarks.md --plot docs/images/benchmarks.png

Hosts come from mmpretrain (Swin, DeiT, TNT, T2T-ViT, ResNet, WRN) and mmdet (PVT v1);
ResNet-26/38 are mmpretrain's ResNet with SAN's (1, 2, 4, 1) and (2, 3, 5, 2) bottleneck
stages (the paper's FLOP-matched baselines).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from torch import nn

ROOT = Path(__file__).resolve().parents[1]
CLS = ROOT / 'configs' / 'cls'


@dataclass(frozen=True)
class Entry:
    """A model of the comparison: an lsa config, or a host backbone + linear head."""

    name: str
    host: str | None = None  # the host's Entry name (lsa variants only)
    config: str | None = None  # lsa or toolbox config
    backbone: dict | None = None  # host backbone config
    channels: int = 0  # host feature channels (for the linear head)
    note: str = ''  # caveat printed under the table


def _swin(arch: str) -> dict:
    return dict(type='mmpretrain.SwinTransformer', arch=arch)


ENTRIES: list[Entry] = [
    Entry('ResNet-26', backbone=dict(type='resnet', depth=26), channels=2048,
          note="mmpretrain's ResNet with SAN's (1, 2, 4, 1) bottleneck stages"),
    Entry('ResNet-38', backbone=dict(type='resnet', depth=38), channels=2048,
          note="mmpretrain's ResNet with SAN's (2, 3, 5, 2) bottleneck stages"),
    Entry('ResNet-50', backbone=dict(type='mmpretrain.ResNet', depth=50), channels=2048),
    Entry('WRN-50-2', config='mmpretrain::wrn/wide-resnet50_8xb32_in1k.py'),
    Entry('Swin-T', backbone=_swin('tiny'), channels=768),
    Entry('Swin-S', backbone=_swin('small'), channels=768),
    Entry('Swin-B', backbone=_swin('base'), channels=1024),
    Entry('DeiT-T', backbone=dict(type='mmpretrain.VisionTransformer', arch='deit-tiny',
                                  out_type='cls_token'), channels=192),
    Entry('DeiT-S', backbone=dict(type='mmpretrain.VisionTransformer', arch='deit-small',
                                  out_type='cls_token'), channels=384),
    Entry('PVT-T', backbone=dict(type='mmdet.PyramidVisionTransformer',
                                 num_layers=[2, 2, 2, 2]), channels=512,
          note="mmdet's PVT v1 with PVT-Tiny's depths (2, 2, 2, 2)"),
    Entry('TNT-T', backbone=dict(type='mmpretrain.TNT', arch=dict(
        embed_dims_outer=192, embed_dims_inner=12, num_layers=12, num_heads_outer=3,
        num_heads_inner=3)), channels=192,
          note="mmpretrain's TNT with TNT-T's sizes (mmpretrain ships only TNT-S/B)"),
    Entry('T2T-ViT-7', backbone=dict(type='mmpretrain.T2T_ViT', embed_dims=256, num_layers=7,
                                     layer_cfgs=dict(num_heads=4, feedforward_channels=512)),
          channels=256,
          note="mmpretrain's T2T-ViT with T2T-ViT-7's sizes; its T2T module uses transformer "
               'token layers, not the performer layers of the paper\'s T2T-ViT-7 (1.2 G), so '
               'it costs about twice the FLOPs and the localvit-t2t-7 ratios are not '
               'like-for-like'),
]
_VARIANTS = [  # (config, host)
    ('san/san10-pairwise_8xb32_in1k', 'ResNet-26'), ('san/san10-patchwise_8xb32_in1k', 'ResNet-26'),
    ('san/san15-pairwise_8xb32_in1k', 'ResNet-38'), ('san/san15-patchwise_8xb32_in1k', 'ResNet-38'),
    ('san/san19-pairwise_8xb32_in1k', 'ResNet-50'), ('san/san19-patchwise_8xb32_in1k', 'ResNet-50'),
    ('lesa/lesa-r50_4xb32-95e_in1k', 'ResNet-50'), ('lesa/lesa-wrn50_4xb32-95e_in1k', 'WRN-50-2'),
    ('elsa/elsa-swin-t_8xb128_in1k', 'Swin-T'), ('elsa/elsa-swin-s_8xb128_in1k', 'Swin-S'),
    ('elsa/elsa-swin-b_16xb64_in1k', 'Swin-B'),
    ('localvit/localvit-tiny_8xb128_in1k', 'DeiT-T'),
    ('localvit/localvit-tiny-se4_8xb128_in1k', 'DeiT-T'),
    ('localvit/localvit-small_8xb128_in1k', 'DeiT-S'),
    ('localvit/localvit-pvt-tiny_8xb128_in1k', 'PVT-T'),
    ('localvit/localvit-tnt-tiny_8xb128_in1k', 'TNT-T'),
    ('localvit/localvit-swin-tiny_8xb128_in1k', 'Swin-T'),
    ('localvit/localvit-t2t-7_8xb128_in1k', 'T2T-ViT-7'),
]
ENTRIES += [Entry(cfg.split('/')[1].split('_')[0], host=host, config=str(CLS / f'{cfg}.py'))
            for cfg, host in _VARIANTS]
BY_NAME = {e.name: e for e in ENTRIES}


# ---------------------------------------------------------------------- worker side
def _build(entry: Entry):
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    import lsa.compat_apply  # noqa: F401  (lsa.compat.apply() before the toolboxes)
    from lsa.apis.runner_config import toolbox_of

    if entry.config:
        path = entry.config
        if '::' in path:  # 'pkg::rel/path.py': a config shipped inside a toolbox package
            pkg, rel = path.split('::')
            path = str(Path(importlib.import_module(pkg).__file__).parent / '.mim/configs' / rel)
        cfg = Config.fromfile(path)
        init_default_scope(toolbox_of(cfg))
        model = MODELS.build(cfg.model)
        return lambda x: model(x, mode='tensor'), model
    init_default_scope('mmpretrain')
    spec = dict(entry.backbone)
    if spec['type'] == 'resnet':  # SAN's ResNet-26/38 baselines
        from mmpretrain.models.backbones.resnet import Bottleneck, ResNet

        class _ResNet(ResNet):
            arch_settings = {26: (Bottleneck, (1, 2, 4, 1)), 38: (Bottleneck, (2, 3, 5, 2))}
        backbone = _ResNet(depth=spec['depth'])
    else:
        if spec['type'].startswith('mmdet.'):
            import mmdet.models  # noqa: F401  (registers mmdet's backbones)
        backbone = MODELS.build(spec)
    model = nn.ModuleDict(dict(backbone=backbone, head=nn.Linear(entry.channels, 1000)))

    def forward(x):
        feat = backbone(x)[-1]
        if feat.dim() == 4:
            feat = feat.mean((2, 3))
        return model['head'](feat)
    return forward, model


def _rss_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def _median_time(fn, iters: int, sync) -> float:
    fn()  # warm-up
    sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(name: str, device: str, batch: int, iters: int, size: int, train: bool) -> dict:
    """Measure one model in this process (called in a fresh subprocess)."""
    import torch
    import torch.nn.functional as F

    from lsa.analysis import complexity_info

    torch.manual_seed(0)
    forward, model = _build(BY_NAME[name])
    model.eval()
    wrapped = _Forward(forward, model)
    with torch.no_grad():
        info = complexity_info(wrapped, (torch.zeros(1, 3, size, size),))
    model.to(device)
    cuda = device.startswith('cuda')
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    x = torch.randn(batch, 3, size, size, device=device)
    res = dict(name=name, flops=info['flops'], params=info['params'], batch=batch)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_kib('VmRSS')
    with torch.no_grad():
        res['infer_s'] = _median_time(lambda: forward(x), iters, sync)
    res['infer_mem_mib'] = ((torch.cuda.max_memory_allocated() - base) / 2**20 if cuda
                            else (_rss_kib('VmHWM') - base) / 1024)
    if train:
        model.train()
        labels = torch.randint(0, 1000, (batch,), device=device)

        def step():
            model.zero_grad(set_to_none=True)
            F.cross_entropy(forward(x), labels).backward()
        res['train_s'] = _median_time(step, iters, sync)
        res['train_mem_mib'] = ((torch.cuda.max_memory_allocated() - base) / 2**20 if cuda
                                else (_rss_kib('VmHWM') - base) / 1024)
    return res


class _Forward(nn.Module):
    """The classifier's ``forward`` as a module (the FLOP tracer needs one)."""

    def __init__(self, forward, model: nn.Module) -> None:
        super().__init__()
        self.model, self._forward = model, forward

    def forward(self, x):
        return self._forward(x)


# ---------------------------------------------------------------------- driver side
def run_all(names: list[str], args: argparse.Namespace) -> list[dict]:
    results = []
    for name in names:
        cmd = [sys.executable, __file__, '--worker', name, '--device', args.device,
               '--batch', str(args.batch), '--iters', str(args.iters), '--size', str(args.size)]
        if args.no_train:
            cmd.append('--no-train')
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-3:]
            print(f'{name}: FAILED ({" | ".join(tail)})', flush=True)
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(res)
        print(f'{name}: {res["flops"] / 1e9:.2f} GFLOPs, {res["params"] / 1e6:.2f} M params, '
              f'infer {res["batch"] / res["infer_s"]:.1f} img/s '
              f'({time.time() - t0:.0f} s)', flush=True)
    return results


def _machine(args: argparse.Namespace) -> str:
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if 'model name' in line)
    except (OSError, StopIteration):
        pass
    dev = args.device
    if dev.startswith('cuda'):
        dev = torch.cuda.get_device_name(0)
    return (f'{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, device {dev}, '
            f'{args.threads} thread(s), input {args.size}x{args.size}, batch {args.batch}, '
            f'median of {args.iters} iterations after 1 warm-up')


def _fmt_ratio(a: float | None, b: float | None) -> str:
    return f'{a / b:.2f}x' if a and b else '-'


def to_markdown(results: list[dict], machine: str, note: str = '', plot: str = '') -> str:
    """docs/benchmarks.md: how it was measured, then one row per model (ratios vs host)."""
    by = {r['name']: r for r in results}
    argv = sys.argv[1:]
    if '--note' in argv:  # shown as its own paragraph
        i = argv.index('--note')
        argv = argv[:i] + argv[i + 2:]
    cmd = shlex.join(['python', 'benchmarks/models.py'] + argv)
    lines = ['# Backbones side by side', '',
             'Generated by one run of `benchmarks/models.py` (do not edit by hand):', '',
             f'```bash\n{cmd}\n```', '',
             f'Machine: {machine}.', '', note, '',
             'Every model is an ImageNet classifier (backbone + global pooling + linear head) at '
             'its published size. FLOPs: `lsa.analysis.flops` (one multiply-add = one FLOP, '
             'attention ops included, batch 1). Speed: images per second (batch / median time '
             'of one pass; training = forward + cross-entropy + backward, no optimiser step). '
             'Memory: growth of the peak RSS of a fresh process over its RSS after building the '
             'model (on CUDA: `max_memory_allocated` growth). **Ratios vs the host** (the '
             'network the method modifies) are the headline; absolute numbers depend on the '
             'machine.', '',
             '| model | host | params (M) | GFLOPs | FLOPs vs host | inference img/s | '
             'inference vs host | training img/s | training vs host | train peak RSS growth '
             '(MiB) | memory vs host |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for r in results:
        e = BY_NAME[r['name']]
        h = by.get(e.host) if e.host else None
        ips = r['batch'] / r['infer_s']
        tps = r['batch'] / r['train_s'] if 'train_s' in r else None
        h_ips = h['batch'] / h['infer_s'] if h else None
        h_tps = h['batch'] / h['train_s'] if h and 'train_s' in h else None
        mem = r.get('train_mem_mib', r['infer_mem_mib'])
        h_mem = h.get('train_mem_mib', h['infer_mem_mib']) if h else None
        lines.append(
            f'| {r["name"]} | {e.host or "(host)"} | {r["params"] / 1e6:.2f} | '
            f'{r["flops"] / 1e9:.2f} | {_fmt_ratio(r["flops"], h and h["flops"])} | {ips:.1f} | '
            f'{_fmt_ratio(ips, h_ips)} | {f"{tps:.1f}" if tps else "-"} | {_fmt_ratio(tps, h_tps)} '
            f'| {mem:.0f} | {_fmt_ratio(mem, h_mem)} |')
    notes = [f'- {r["name"]}: {BY_NAME[r["name"]].note}' for r in results
             if BY_NAME[r['name']].note]
    if notes:
        lines += ['', 'Hosts:', ''] + notes
    if plot:
        lines += ['', f'![img/s vs FLOPs, and memory]({plot})']
    return '\n'.join(lines) + '\n'


def plot(results: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for r in results:
        host = BY_NAME[r['name']].host is None
        style = dict(marker='s' if host else 'o', color='gray' if host else 'C0')
        gf = r['flops'] / 1e9
        ax1.scatter(gf, r['batch'] / r['infer_s'], **style)
        ax1.annotate(r['name'], (gf, r['batch'] / r['infer_s']), fontsize=6)
        mem = r.get('train_mem_mib', r['infer_mem_mib'])
        ax2.scatter(gf, mem, **style)
        ax2.annotate(r['name'], (gf, mem), fontsize=6)
    ax1.set(xlabel='GFLOPs (224x224)', ylabel='inference img/s', xscale='log', yscale='log',
            title='speed vs FLOPs (squares: hosts)')
    ax2.set(xlabel='GFLOPs (224x224)', ylabel='training peak RSS growth (MiB)', xscale='log',
            title='memory vs FLOPs')
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--models', nargs='+', help='names or substrings (default: all)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--iters', type=int, default=3)
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--threads', type=int, default=1, help='OMP_NUM_THREADS of the workers')
    p.add_argument('--no-train', action='store_true', help='skip the training step')
    p.add_argument('--quick', action='store_true', help='batch 1, 2 iterations, no training')
    p.add_argument('--markdown', help='write the table here')
    p.add_argument('--plot', help='write the plot PNG here')
    p.add_argument('--json', help='write raw results here')
    p.add_argument('--note', default='', help='a paragraph for the markdown (e.g. machine load)')
    p.add_argument('--results', nargs='+', metavar='JSON',
                   help='render --markdown/--plot from saved --json results (merged in order) '
                        'instead of measuring')
    p.add_argument('--worker', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.iters, args.no_train = 1, 2, True
    if args.batch < 1 or args.iters < 1:
        p.error(f'--batch and --iters must be >= 1, got {args.batch}, {args.iters}')
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.worker:
        res = measure(args.worker, args.device, args.batch, args.iters, args.size,
                      train=not args.no_train)
        print(json.dumps(res))
        return [res]
    if args.results:
        results = [r for f in args.results for r in json.loads(Path(f).read_text())]
        order = {e.name: i for i, e in enumerate(ENTRIES)}
        results.sort(key=lambda r: order[r['name']])
        return _report(results, args)
    names = [e.name for e in ENTRIES]
    if args.models:
        names = [n for n in names if any(m.lower() in n.lower() for m in args.models)]
        if not names:
            raise SystemExit(f'--models {args.models} matches none of {list(BY_NAME)}')
    return _report(run_all(names, args), args)


def _report(results: list[dict], args: argparse.Namespace) -> list[dict]:
    rel_plot = ''
    if args.plot and args.markdown:
        rel_plot = os.path.relpath(args.plot, Path(args.markdown).parent)
    md = to_markdown(results, _machine(args), args.note, rel_plot)
    print(md)
    if args.markdown:
        Path(args.markdown).write_text(md)
    if args.plot:
        plot(results, args.plot)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == '__main__':
    main()
