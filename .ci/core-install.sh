#!/usr/bin/env bash
# The core install, as `pip install skcgcnn` gives it: no extras (no matminer, optuna,
# mp-api, ase), from the pins, in its own venv (.venv-core, rebuilt each run, about a
# minute).  Installed as a wheel, not editable, so that the package data
# (skcgcnn/data/) is checked too.  Then, from a temporary folder: the library smoke
# (.ci/core_smoke.py) and the commands train, predict (an original checkpoint) and
# benchmark --models dummy.  The parts that need ../shared/data skip without it.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
venv=$repo/.venv-core
rm -rf "$venv"
python3 -m venv "$venv"
py=$venv/bin/python
"$py" -m pip install -q -c constraints.txt "torch==2.13.0"
"$py" -m pip install -q -c constraints.txt setuptools
"$py" -m pip install -q -c constraints.txt --no-build-isolation "$repo"
"$py" -m pip check

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR"  # as make test
"$py" "$repo/.ci/core_smoke.py" "$repo"

data=$repo/../shared/data
reference=$data/cgcnn-reference
sample500=$data/mp-formation-energy-36737/sample-500
if [[ ! -d $reference || ! -d $sample500 ]]; then
    echo "core-install: $data not found: skipping the command-line checks"
    exit 0
fi
skcgcnn=$venv/bin/skcgcnn
# predict with an original checkpoint: one line per crystal of sample-regression
"$skcgcnn" predict -q "$reference/pre-trained/formation-energy-per-atom.pth.tar" \
    "$reference/sample-regression" -o predictions.csv
test "$(wc -l < predictions.csv)" -eq 10
# a tiny folder: 30 crystals of sample-500
mkdir tiny
head -n 30 "$sample500/id_prop.csv" > tiny/id_prop.csv
cut -d, -f1 tiny/id_prop.csv | while read -r id; do cp "$sample500/$id.cif" tiny/; done
"$skcgcnn" train -q tiny --epochs 2 --batch-size 8 --device cpu --output-dir train
test -s train/model.pt
"$skcgcnn" predict -q train/model.pt tiny -o train-predictions.csv
test "$(wc -l < train-predictions.csv)" -eq 30
"$skcgcnn" benchmark -q tiny --models dummy --cv 2 --output-dir bench
test -s bench/results.csv
echo "core-install: the core install trains, predicts and benchmarks without the extras"
