"""Block-level CPU benchmark: one ``SANAttention`` fused vs ``fused=False``, interleaved.

Default size: SAN10's first stage (in 256, out 64, rel 16, Cw = M = 8, k = 7) on a
(4, 256, 56, 56) fp32 input. Forward = eval mode under ``no_grad`` (BN folded); training
step = train mode, forward + backward of ``y.sum()`` (batch statistics, running-stat
updates). Each repetition times fused and unfused back to back; medians are printed,
with the per-repetition fused/unfused ratio's median. Not a test.

    python benchmarks/san_block.py --sa-type patchwise --repeat 7 --threads 1
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--sa-type', default='patchwise', choices=('pairwise', 'patchwise'))
    ap.add_argument('--batch', type=int, default=4)
    ap.add_argument('--size', type=int, default=56)
    ap.add_argument('--repeat', type=int, default=7)
    ap.add_argument('--threads', type=int, default=1)
    args = ap.parse_args(argv)
    import lsa.models  # noqa: F401
    from lsa.models.layers.san_attention import SANAttention
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fused = SANAttention(256, 64, 7, sa_type=args.sa_type, fused=True)
    blocks = {'fused': fused, 'unfused': copy.deepcopy(fused)}
    blocks['unfused'].fused = False
    x = torch.randn(args.batch, 256, args.size, args.size)

    def forward(m):
        m.eval()
        with torch.no_grad():
            m(x)

    def train_step(m):
        m.train()
        xi = x.detach().requires_grad_()
        m(xi).sum().backward()

    for name, fn in (('forward', forward), ('training step', train_step)):
        times = {k: [] for k in blocks}
        for _ in range(args.repeat + 1):  # the first round is a warm-up
            for k, m in blocks.items():
                t0 = time.perf_counter()
                fn(m)
                times[k].append(time.perf_counter() - t0)
        ratios = [a / b for a, b in zip(times['fused'][1:], times['unfused'][1:])]
        med = {k: statistics.median(v[1:]) * 1e3 for k, v in times.items()}
        print(f'{args.sa_type} {name}: fused {med["fused"]:.1f} ms, unfused '
              f'{med["unfused"]:.1f} ms, fused/unfused time {statistics.median(ratios):.2f} '
              f'(median of {args.repeat} interleaved pairs, {args.threads} thread(s))')


if __name__ == '__main__':
    main()
