#!/usr/bin/env python3
"""Launches an example program with torchrun, two ranks, and checks that it
trains exactly like one process on the whole batch.

    check_torchrun.py --program build/examples/tram-vit --model DIR --out DIR -- ARGS...

The program reads rank, world size and the store from torchrun's environment
(RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT: its default rendezvous env://).
The model is copied with its dropout set to 0 and the run is in float64, so
the two runs must agree up to the order of the all-reduce's sums (1e-10).
Exit 0 when they do; 1 with the reason otherwise.
"""

import csv
import json
import os
import subprocess
import sys

from launch_util import CLEAN_ENV, check_arguments, max_difference, model_without_dropout, tensors


def run(command, env=None):
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0:
        sys.exit(f"check_torchrun: {' '.join(command)} exited with {result.returncode}:\n"
                 f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def metrics(directory):
    """The evaluation rows of metrics.csv (the train rows are rank 0's own half-batch loss)."""
    with open(os.path.join(directory, "metrics.csv")) as f:
        return {(row["step"], row["split"], row["metric"]): float(row["value"])
                for row in csv.DictReader(f) if row["split"] != "train"}


def main():
    options, extra = check_arguments(__doc__)

    model = model_without_dropout(options.model, options.out)
    arguments = ["--model", model, "--dtype", "float64", "--quiet", *extra]
    one = os.path.join(options.out, "one")
    run([options.program, *arguments, "--out", one], env=CLEAN_ENV)
    two = os.path.join(options.out, "two")
    # --standalone: torchrun picks a free port itself.
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "--no-python", options.program, *arguments, "--out", two], env=CLEAN_ENV)

    a = tensors(os.path.join(one, "checkpoint", "model.safetensors"))
    b = tensors(os.path.join(two, "checkpoint", "model.safetensors"))
    worst = max_difference(a, b)
    if worst is None:
        sys.exit(f"check_torchrun: the checkpoints hold different tensors: {sorted(a.keys() ^ b.keys())[:5]}")
    if worst > 1e-10:
        sys.exit(f"check_torchrun: two ranks under torchrun differ from one process by {worst:.3g} (> 1e-10)")
    initial = tensors(os.path.join(model, "model.safetensors"))
    moved = max(float((a[k] - initial[k]).abs().max()) for k in a if k in initial)
    if moved < 1e-6:
        sys.exit(f"check_torchrun: training moved no weight (max change {moved:.3g}); the comparison would be empty")
    ma, mb = metrics(one), metrics(two)
    if ma.keys() != mb.keys() or any(abs(ma[k] - mb[k]) > 1e-8 * max(1.0, abs(ma[k])) for k in ma):
        sys.exit("check_torchrun: the evaluation rows of metrics.csv differ between the two runs")
    with open(os.path.join(two, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(one, "summary.json")) as f:
        expected_steps = json.load(f)["steps"]
    if summary.get("steps") != expected_steps:
        sys.exit(f"check_torchrun: the torchrun run recorded {summary.get('steps')} steps, expected {expected_steps}")
    print(f"check_torchrun: {len(a)} checkpoint tensors agree to {worst:.2g} (training moved them by up to "
          f"{moved:.2g}), {len(ma)} evaluation rows too: two ranks under torchrun = one process")


if __name__ == "__main__":
    main()
