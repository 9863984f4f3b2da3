"""Block-level CPU benchmark: one ``SANAttention`` fused vs ``fused=False``, interleaved.

``--against bf16-autocast`` instead times the fused block in fp32 against the same fused
block under ``torch.autocast('cpu', dtype=torch.bfloat16)``, then the fused op alone
(random arguments of the block's shapes) with float32 against bf16 activations
(float32 parameters, as autocast passes them).

Default size: SAN10's first stage (in 256, out 64, rel 16, Cw = M = 8, k = 7) on a
(4, 256, 56, 56) fp32 input. Forward = eval mode under ``no_grad`` (BN folded); training
step = train mode, forward + backward of ``y.sum()`` (batch statistics, running-stat
updates). Each repetition times fused and unfused back to back; medians are printed,
with the per-repetition fused/unfused ratio's median. Not a test.

    python benchmarks/san_block.py --sa-type patchwise --repeat 7 --threads 1
    python benchmarks/san_block.py --sa-type pairwise --against bf16-autocast
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import time

import torch


def interleaved(label: str, fns: dict, repeat: int, threads: int) -> None:
    """Time the callables of ``fns`` (two: name -> fn) back to back ``repeat`` times after
    a warm-up round; print the medians and the median of the per-round time ratios."""
    times = {k: [] for k in fns}
    for _ in range(repeat + 1):  # the first round is a warm-up
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    (a, ta), (b, tb) = times.items()
    ratio = statistics.median(x / y for x, y in zip(ta[1:], tb[1:]))
    print(f'{label}: {a} {statistics.median(ta[1:]) * 1e3:.1f} ms, {b} '
          f'{statistics.median(tb[1:]) * 1e3:.1f} ms, {a}/{b} time {ratio:.2f} '
          f'(median of {repeat} interleaved pairs, {threads} thread(s))')


def fused_op_inputs(block, batch: int, size: int) -> list:
    """Random arguments of ``block``'s fused op (u1, u2, value, scale1, shift1, weight1,
    bias1, weight2, bias2) with its shapes, float32."""
    g = block.gamma
    rel = g.norm1.num_features if block.sa_type == 'pairwise' else block.rel_channels
    acts = [torch.randn(batch, c, size, size) for c in (rel, rel, block.out_channels)]
    ca, (m, rows) = g.norm1.num_features, (g.conv1.out_channels, g.conv2.out_channels)
    return acts + [torch.rand(ca) + 0.5, torch.randn(ca) * 0.1, torch.randn(m, ca) / ca ** 0.5,
                   torch.randn(m) * 0.1, torch.randn(rows, m) / m ** 0.5, torch.randn(rows) * 0.1]


def compare_fused_op_dtypes(block, args) -> None:
    """The fused op alone: float32 against bf16 activations with float32 parameters."""
    from lsa.ops import san_pairwise_attention, san_patchwise_attention
    op = san_pairwise_attention if block.sa_type == 'pairwise' else san_patchwise_attention
    fp32 = fused_op_inputs(block, args.batch, args.size)
    bf16 = [t.bfloat16() if i < 3 else t for i, t in enumerate(fp32)]

    def forward(ins):
        with torch.no_grad():
            op(*ins, 7)

    def forward_backward(ins):
        ins = [t.detach().requires_grad_() for t in ins]
        op(*ins, 7).float().sum().backward()

    for label, fn in (('forward', forward), ('forward + backward', forward_backward)):
        interleaved(f'{block.sa_type} fused op {label}',
                    {'fp32': lambda fn=fn: fn(fp32), 'bf16': lambda fn=fn: fn(bf16)},
                    args.repeat, args.threads)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--sa-type', default='patchwise', choices=('pairwise', 'patchwise'))
    ap.add_argument('--batch', type=int, default=4)
    ap.add_argument('--size', type=int, default=56)
    ap.add_argument('--repeat', type=int, default=7)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--against', default='unfused', choices=('unfused', 'bf16-autocast'))
    args = ap.parse_args(argv)
    import lsa.models  # noqa: F401
    from lsa.models.layers.san_attention import SANAttention
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fused = SANAttention(256, 64, 7, sa_type=args.sa_type, fused=True)
    other = copy.deepcopy(fused)
    other.fused = args.against != 'unfused'
    plain = contextlib.nullcontext()
    # name -> (block, context it runs in)
    if args.against == 'unfused':
        blocks = {'fused': (fused, plain), 'unfused': (other, plain)}
    else:
        blocks = {'fused fp32': (fused, plain),
                  'fused bf16-autocast': (other, torch.autocast('cpu', dtype=torch.bfloat16))}
    x = torch.randn(args.batch, 256, args.size, args.size)

    def forward(m, ctx):
        m.eval()
        with torch.no_grad(), ctx:
            m(x)

    def train_step(m, ctx):
        m.train()
        xi = x.detach().requires_grad_()
        with ctx:
            y = m(xi)
        y.float().sum().backward()

    for name, fn in (('forward', forward), ('training step', train_step)):
        interleaved(f'{args.sa_type} {name}',
                    {k: lambda m=m, ctx=ctx, fn=fn: fn(m, ctx) for k, (m, ctx) in blocks.items()},
                    args.repeat, args.threads)
    if args.against == 'bf16-autocast':
        compare_fused_op_dtypes(fused, args)


if __name__ == '__main__':
    main()
