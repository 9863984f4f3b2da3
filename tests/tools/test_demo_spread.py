"""tools/misc/demo_spread.py: rows read back with --reuse, and the mean (min-max) summary."""
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_reuse_reads_rows_and_summarises_per_thread_count(tmp_path, capsys, load_script):
    rows = {(0, 1): 0.50, (1, 1): 0.60, (0, 2): 0.40}
    for (seed, threads), value in rows.items():
        work = tmp_path / f'seed{seed}_t{threads}'
        work.mkdir()
        row = dict(bbox_mAP=value, bbox_mAP_50=0.7, segm_mAP=value + 0.1, segm_mAP_50=0.7,
                   loss_ratio=0.2, wall_s=400.0 + 2 * seed, seed=seed, threads=threads)
        (work / 'row.json').write_text(json.dumps(row))
    out_rows = load_script('tools/misc/demo_spread.py').main(['--seeds', '0', '1', '--threads', '1', '--work-root',
                               str(tmp_path), '--reuse'])
    assert [r['bbox_mAP'] for r in out_rows] == [0.50, 0.60]  # read back, nothing run
    out = capsys.readouterr().out
    assert '| 1 thread(s) | 0.550 (0.500-0.600) | 0.700 (0.700-0.700) | 0.650 (0.600-0.700)' in out
    assert '| all | 0.550 (0.500-0.600) |' in out and '401 (400-402)' in out
