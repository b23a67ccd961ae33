"""The benchmark programs' smoke check (ctest bench.Smoke*): runs one on the
CPU with tiny shapes and one timed iteration, then checks that the tables it
writes have the rows they should, each with a finite positive time. Not a
measurement: bench/RESULTS.md has those.

    python3 bench/check_smoke.py kernels|step OUT_DIR PROGRAM
"""
import csv
import math
import os
import shutil
import subprocess
import sys

kind, out, program = sys.argv[1:4]
shutil.rmtree(out, ignore_errors=True)
os.makedirs(out)
if kind == "kernels":
    command = [program, "--device", "cpu", "--small", "--iters", "1", "--warmup", "0", "--out", out]
    table = "kernels.csv"
else:
    command = [program, "--device", "cpu", "--small", "--iters", "1", "--warmup", "0", "--out", out,
               "--methods", "adam,sam,tram-prev,tram-noise,r3f,looksam@k=2"]
    table, time_column = "step.csv", "step_ms"
result = subprocess.run(command, capture_output=True, text=True)
if result.returncode != 0:
    sys.exit(f"{' '.join(command)} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}")
path = os.path.join(out, table)
if not os.path.exists(path):
    sys.exit(f"{' '.join(command)} wrote no {table}:\n{result.stdout}")
rows = list(csv.DictReader(open(path)))
if not rows:
    sys.exit(f"{path} has no rows")
if kind == "kernels":
    # The first row is the copy-bandwidth floor; every kernel row was checked
    # against its ATen composite by the program itself ("ok").
    if rows[0]["section"] != "floor" or not float(rows[0]["GB/s"]) > 0:
        sys.exit(f"{path}: the first row is not a positive copy-bandwidth floor: {rows[0]}")
    rows = rows[1:]
    time_column = "tram_ms"
    sections = {r["section"] for r in rows}
    if not {"kl", "ascent"} <= sections:
        sys.exit(f"{path}: sections {sorted(sections)}, expected kl and ascent")
    failed = [r for r in rows if r["check"] != "ok"]
    if failed:
        sys.exit(f"{path}: kernels not checked ok against the reference: {failed}")
else:
    # The plain LibTorch loop first, then the methods asked for, in order.
    methods = [r["method"] for r in rows]
    expected = ["plain (LibTorch loop, no tram)", "adam", "sam", "tram-prev", "tram-noise", "r3f", "looksam@k=2"]
    if methods != expected:
        sys.exit(f"{path}: methods {methods}, expected {expected}")
for r in rows:
    try:
        value = float(r[time_column])
    except ValueError:
        sys.exit(f"{path}: {time_column} = {r[time_column]!r} in {r}")
    if not (math.isfinite(value) and value > 0):
        sys.exit(f"{path}: {time_column} = {value} in {r}")
print(f"{table}: {len(rows)} rows, {time_column} finite and positive")
