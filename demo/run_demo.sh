#!/usr/bin/env bash
# The main job: generate the synthetic COCO shapes dataset, train a small LESA Mask R-CNN on it
# (CPU is fine, a few minutes), evaluate it with `tools/test.py --eval bbox segm` and draw its
# predictions. Run from anywhere with the venv active:  bash demo/run_demo.sh
#
# Knobs (environment variables):
#   LSA_DEMO_DATA      dataset folder               (default data/demo_coco)
#   LSA_DEMO_WORK_DIR  logs, checkpoint and picture (default work_dirs/demo)
#   LSA_DEMO_EPOCHS    training epochs              (default 12, from the config)
#   LSA_DEMO_NUM_TRAIN / LSA_DEMO_NUM_VAL  generated images (default 64 / 16)
#   LSA_DEMO_SEED      dataset seed                 (default 0)
#   OMP_NUM_THREADS    torch CPU threads            (default 1: robust on busy 2-core machines)
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${LSA_DEMO_DATA:-data/demo_coco}
WORK_DIR=${LSA_DEMO_WORK_DIR:-work_dirs/demo}
CONFIG=configs/det/demo/mask_rcnn_lesa_tiny_demo.py
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export LSA_DEMO_COCO="${DATA%/}/"   # read by the config's data settings

echo "== 1/4 generating the demo dataset in $DATA"
"$PYTHON" tools/misc/make_demo_data.py coco "$DATA" \
    --num-train "${LSA_DEMO_NUM_TRAIN:-64}" --num-val "${LSA_DEMO_NUM_VAL:-16}" \
    --seed "${LSA_DEMO_SEED:-0}"

echo "== 2/4 training $CONFIG (work dir $WORK_DIR)"
"$PYTHON" tools/train.py "$CONFIG" --work-dir "$WORK_DIR"
CKPT=$(cat "$WORK_DIR/last_checkpoint")

echo "== 3/4 evaluating $CKPT"
"$PYTHON" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK_DIR/test" --eval bbox segm \
    | tee "$WORK_DIR/test_output.txt"

echo "== 4/4 drawing predictions"
"$PYTHON" demo/image_demo.py "${DATA%/}/val/000000.jpg" "$CONFIG" "$CKPT" \
    --out-file "$WORK_DIR/demo_predictions.png"

echo
echo "== demo finished"
"$PYTHON" - "$WORK_DIR/test_output.txt" <<'PY'
import re, sys
lines = [ln for ln in open(sys.argv[1]) if 'Epoch(test)' in ln]
metrics = dict(re.findall(r'coco/(\S+): (\S+)', lines[-1])) if lines else {}
for key in ('bbox_mAP', 'bbox_mAP_50', 'segm_mAP', 'segm_mAP_50'):
    print(f'   {key:12s} {metrics.get(key, "?")}')
PY
echo "   predictions drawn in $WORK_DIR/demo_predictions.png"
