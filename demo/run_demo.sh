#!/usr/bin/env bash
# The main job: generate the synthetic COCO shapes dataset, train a small LESA Mask R-CNN on it
# from scratch (CPU is fine, a few minutes), evaluate it with `tools/test.py --eval bbox segm`,
# draw ground truth beside predictions for several validation images and print the metrics.
# Run from anywhere with the venv active:
#
#   bash demo/run_demo.sh [--cfg-options KEY=VALUE ...]    (extra arguments go to tools/train.py)
#
# Knobs (environment variables):
#   LSA_DEMO_DATA      dataset folder               (default data/demo_coco)
#   LSA_DEMO_WORK_DIR  logs, checkpoints, picture   (default work_dirs/demo)
#   LSA_DEMO_EPOCHS    training epochs              (default from the config)
#   LSA_DEMO_NUM_TRAIN / LSA_DEMO_NUM_VAL  generated images (default 200 / 32)
#   LSA_DEMO_SEED      dataset and training seed    (default 0)
#   OMP_NUM_THREADS    torch CPU threads            (default 2; results are deterministic for
#                                                    a given machine and thread count)
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${LSA_DEMO_DATA:-data/demo_coco}
WORK_DIR=${LSA_DEMO_WORK_DIR:-work_dirs/demo}
CONFIG=configs/det/demo/mask_rcnn_lesa_tiny_demo.py
PYTHON=${PYTHON:-python}
SEED=${LSA_DEMO_SEED:-0}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export LSA_DEMO_COCO="${DATA%/}/"   # read by the config's data settings
export LSA_DEMO_SEED="$SEED"        # read by the config's randomness settings

# The knobs are checked by tools/train.py (lsa.apis.preflight.check_demo_env) and
# tools/misc/make_demo_data.py, each with a message naming the knob.

echo "== 1/5 generating the demo dataset in $DATA"
"$PYTHON" tools/misc/make_demo_data.py coco "$DATA" \
    --num-train "${LSA_DEMO_NUM_TRAIN:-200}" --num-val "${LSA_DEMO_NUM_VAL:-32}" \
    --seed "$SEED" >/dev/null

echo "== 2/5 training $CONFIG (work dir $WORK_DIR, $OMP_NUM_THREADS thread(s))"
"$PYTHON" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" "$@"
CKPT=$(cat "$WORK_DIR/last_checkpoint")

echo "== 3/5 evaluating $CKPT"
"$PYTHON" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK_DIR/test" --eval bbox segm \
    | tee "$WORK_DIR/test_output.txt"

echo "== 4/5 drawing ground truth beside predictions"
"$PYTHON" demo/draw_predictions.py "$CONFIG" "$CKPT" --num 6 \
    --out-file "$WORK_DIR/demo_predictions.png"

echo "== 5/5 demo finished"
"$PYTHON" - "$WORK_DIR/test_output.txt" <<'PY'
import re, sys
lines = [ln for ln in open(sys.argv[1]) if 'Epoch(test)' in ln]
metrics = dict(re.findall(r'coco/(\S+): (\S+)', lines[-1])) if lines else {}
print('\n| metric      | value |\n|-------------|-------|')
for key in ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'segm_mAP', 'segm_mAP_50', 'segm_mAP_75'):
    value = metrics.get(key)
    print(f'| {key:11s} | {float(value):.3f} |' if value else f'| {key:11s} |   ?   |')
PY
echo "predictions (ground truth left, prediction right): $WORK_DIR/demo_predictions.png"
