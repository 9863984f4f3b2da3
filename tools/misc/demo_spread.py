"""Measure the demo's run-to-run spread: README command 1 over several seeds and thread counts.

::

    python tools/misc/demo_spread.py --seeds 0 1 2 3 4 --threads 1 2 [--work-root work_dirs/spread]

Each run is ``demo/run_demo.sh`` with ``LSA_DEMO_SEED`` (dataset and training seed) and
``OMP_NUM_THREADS`` set, in its own work and data folder. Prints one row per run (metrics,
the training loss ratio last/first logged interval, wall time) and, per thread count and
overall, the mean and range of every column: the figures docs/train_test.md quotes.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KEYS = ('bbox_mAP', 'bbox_mAP_50', 'segm_mAP', 'segm_mAP_50')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Measure the demo's spread over seeds/threads")
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--work-root', default='work_dirs/demo_spread')
    parser.add_argument('--epochs', type=int, help='LSA_DEMO_EPOCHS (default: the config)')
    parser.add_argument('--num-train', type=int, help='LSA_DEMO_NUM_TRAIN (default: demo)')
    parser.add_argument('--reuse', action='store_true',
                        help='take a run whose row.json exists in its work folder instead of '
                        'running it again (to run seeds/threads in parallel invocations and '
                        'then print one table over all of them)')
    args = parser.parse_args(argv)
    if min(args.threads) < 1:
        parser.error('--threads must be >= 1')
    return args


def one_run(seed: int, threads: int, root: Path, args: argparse.Namespace) -> dict:
    """Run the demo once and read back its test metrics and logged training losses.

    The row is also written to ``<work>/row.json`` (what ``--reuse`` reads back).
    """
    work = root / f'seed{seed}_t{threads}'
    if args.reuse and (work / 'row.json').is_file():
        return json.loads((work / 'row.json').read_text())
    env = dict(os.environ, LSA_DEMO_SEED=str(seed), OMP_NUM_THREADS=str(threads),
               LSA_DEMO_WORK_DIR=str(work), LSA_DEMO_DATA=str(root / f'data_seed{seed}'),
               PYTHON=sys.executable)
    if args.epochs:
        env['LSA_DEMO_EPOCHS'] = str(args.epochs)
    if args.num_train:
        env['LSA_DEMO_NUM_TRAIN'] = str(args.num_train)
    start = time.time()
    proc = subprocess.run(['bash', str(REPO / 'demo' / 'run_demo.sh')], env=env, cwd=REPO,
                          capture_output=True, text=True)
    wall = time.time() - start
    if proc.returncode != 0:
        raise SystemExit(f'seed {seed}, {threads} thread(s): run_demo.sh exited '
                         f'{proc.returncode}:\n{(proc.stdout + proc.stderr)[-4000:]}')
    (metrics_file, ) = sorted(glob.glob(str(work / 'test' / '*' / '*.json')))[-1:]
    with open(metrics_file) as f:
        metrics = json.loads(f.read().strip().splitlines()[-1])
    (scalars, ) = glob.glob(str(work / '2*' / 'vis_data' / 'scalars.json'))
    with open(scalars) as f:
        losses = [rec['loss'] for rec in map(json.loads, f) if 'loss' in rec]
    row = {k: metrics[f'coco/{k}'] for k in KEYS}
    row.update(loss_ratio=losses[-1] / losses[0], wall_s=wall, seed=seed, threads=threads)
    (work / 'row.json').write_text(json.dumps(row))
    return row


def summary(rows: list[dict], label: str) -> str:
    cols = [*KEYS, 'loss_ratio', 'wall_s']
    cells = []
    for c in cols:
        vals = [r[c] for r in rows]
        fmt = '{:.0f}' if c == 'wall_s' else '{:.3f}'
        cells.append(f'{fmt.format(statistics.mean(vals))} '
                     f'({fmt.format(min(vals))}-{fmt.format(max(vals))})')
    return f'| {label} | ' + ' | '.join(cells) + ' |'


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    root = REPO / args.work_root
    cols = [*KEYS, 'loss_ratio', 'wall_s']
    print('| seed | threads | ' + ' | '.join(cols) + ' |')
    print('|---' * (len(cols) + 2) + '|')
    rows = []
    for threads in args.threads:
        for seed in args.seeds:
            row = one_run(seed, threads, root, args)
            rows.append(row)
            print(f'| {seed} | {threads} | '
                  + ' | '.join(f'{row[c]:.0f}' if c == 'wall_s' else f'{row[c]:.3f}'
                               for c in cols) + ' |', flush=True)
    print('\nmean (min-max):\n| runs | ' + ' | '.join(cols) + ' |')
    print('|---' * (len(cols) + 1) + '|')
    for threads in args.threads:
        print(summary([r for r in rows if r['threads'] == threads], f'{threads} thread(s)'))
    print(summary(rows, 'all'))
    return rows


if __name__ == '__main__':
    main()
