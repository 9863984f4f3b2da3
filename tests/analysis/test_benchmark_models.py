"""benchmarks/models.py: coverage of the model list and the report (no timing here)."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bench(load_script):
    return load_script('benchmarks/models.py')


def test_every_cls_config_is_compared_with_a_listed_host(bench):
    configs = {Path(e.config).resolve() for e in bench.ENTRIES if e.host}
    assert configs == {p.resolve() for p in (ROOT / 'configs/cls').glob('*/*.py')}
    for e in bench.ENTRIES:
        if e.host:
            assert bench.BY_NAME[e.host].host is None, e.name


def test_report_gives_ratios_to_the_host(tmp_path, bench):
    host = dict(name='DeiT-T', flops=1.0e9, params=5e6, batch=2, infer_s=0.5, infer_mem_mib=100,
                train_s=1.0, train_mem_mib=200)
    var = dict(name='localvit-tiny', flops=1.5e9, params=6e6, batch=2, infer_s=1.0,
               infer_mem_mib=150, train_s=4.0, train_mem_mib=300)
    md = bench.to_markdown([host, var], 'test machine', 'shared', 'plot.png')
    row = next(line for line in md.splitlines() if line.startswith('| localvit-tiny'))
    cells = [c.strip() for c in row.split('|')[1:-1]]
    assert cells[1] == 'DeiT-T' and cells[4] == '1.50x'  # FLOPs vs host
    assert cells[5] == '2.0' and cells[6] == '0.50x'  # inference img/s and ratio
    assert cells[7] == '0.5' and cells[8] == '0.25x'  # training
    assert cells[10] == '1.50x'  # training peak memory
    assert 'Machine: test machine.' in md and '](plot.png)' in md
    png = tmp_path / 'p.png'
    bench.plot([host, var], str(png))
    assert png.read_bytes()[:4] == b'\x89PNG'


def test_quick_sets_a_feasible_setting(bench):
    args = bench.parse_args(['--quick'])
    assert (args.batch, args.iters, args.no_train) == (1, 2, True)
