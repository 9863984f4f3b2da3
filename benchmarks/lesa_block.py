"""Where one LESA block spends its time and its saved memory (CPU profile).

For each form it runs one block (batch 4 by default) in eval mode under
``no_grad`` and one training step (forward + backward) under
``torch.profiler``, prints the top operators by self CPU time, and lists the
tensors autograd keeps for the backward pass (``saved_tensors_hooks``, grouped
by shape, distinct storages counted once). Not a test: nothing is asserted.

    python benchmarks/lesa_block.py                        # cls P=256, P=512; det P=256 at 14x14
    python benchmarks/lesa_block.py --forms det --size 32  # the detection form on a larger map
"""
from __future__ import annotations

import argparse
import collections

import torch
from torch.profiler import ProfilerActivity, profile

from lsa.models.layers.lesa_attention import LESAAttention

FORMS = {'cls256': ('classification', 256), 'cls512': ('classification', 512),
         'det': ('detection_qr', 256)}


def saved_by_shape(fn) -> tuple[int, list[tuple[str, int, int]]]:
    """Distinct storages autograd saves while ``fn()`` runs: total bytes and (shape, count, MB)."""
    storages: dict[int, tuple[int, tuple]] = {}

    def pack(t):
        s = t.untyped_storage()
        storages.setdefault(s.data_ptr(), (s.nbytes(), tuple(t.shape)))
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    groups = collections.defaultdict(lambda: [0, 0])
    for nbytes, shape in storages.values():
        groups[str(shape)][0] += 1
        groups[str(shape)][1] += nbytes
    rows = sorted(((k, c, b) for k, (c, b) in groups.items()), key=lambda r: -r[2])
    return sum(b for _, _, b in rows), rows


def profile_form(form: str, batch: int, size: int, top: int) -> None:
    """Print the eval and training-step profiles and the saved tensors of one block."""
    pe, width = FORMS[form]
    torch.manual_seed(0)
    blk = LESAAttention(width, fmap_size=size, pe_type=pe)
    x = torch.randn(batch, width, size, size, requires_grad=True)

    def loss() -> torch.Tensor:
        return blk(x).square().mean()

    blk.eval()
    with torch.no_grad():
        blk(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            blk(x)
    print(f'\n== {form} (P={width}, {size}x{size}, batch {batch}), eval')
    print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=top))
    blk.train()
    loss().backward()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        loss().backward()
    print(f'== {form}, training step (forward + backward)')
    print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=top))
    total, rows = saved_by_shape(loss)
    print(f'== {form}, saved for backward: {total / 2**20:.1f} MB')
    for shape, count, nbytes in rows[:10]:
        print(f'  {shape:>24} x{count}: {nbytes / 2**20:.1f} MB')


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--forms', nargs='+', choices=sorted(FORMS), default=list(FORMS))
    p.add_argument('--batch', type=int, default=4)
    p.add_argument('--size', type=int, default=14, help='map side (cls: the design size)')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--top', type=int, default=12)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for form in args.forms:
        profile_form(form, args.batch, args.size, args.top)


if __name__ == '__main__':
    main()
