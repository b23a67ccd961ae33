#!/usr/bin/env python3
"""Differential test: tram-trace against the independent Python reference.

For each case in cases/*.json (or the files given), runs tram-trace and
reference.py and compares, at every step, the loss, the trust-region distance
d, the radius (divided by max(1, scale), since radius = scale * d), the ascent
norm (relative to max(1, norm)), the skipped flag and every parameter after
the step:

  float64 cases: max |tram - reference| <= 1e-10 (absolute; the values are O(1))
  float32 cases: max |tram - reference| <= 1e-6 (tram runs in float32, the
                 reference in float64 from the same float32-rounded start: this
                 bounds the float32 rounding of a few steps, ~8 ulps at 1.0)

A case may carry "checks" that relate its tram-trace output to another case's:
  "same_params_as": NAME  every step's loss and parameters are bit-identical
                          (e.g. SAM with rho 0 is the base step)
  "differs_from": NAME    the final parameters differ by more than 1e-6
                          (the trace is sensitive to the option that differs)

Prints one line per case and exits non-zero on any mismatch, on any case that
could not be run, and when no case was found.
"""

import argparse
import glob
import json
import math
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference  # noqa: E402  (the reference runs in this process: one torch import)
TOLERANCE = {"float64": 1e-10, "float32": 1e-6}
SENSITIVITY = 1e-6


def flatten(value):
    if isinstance(value, list):
        for item in value:
            yield from flatten(item)
    else:
        yield value


def shape_of(value):
    if isinstance(value, list):
        return [len(value)] + (shape_of(value[0]) if value else [])
    return []


def diff(a, b):
    """max |a - b| over nested lists; inf when shapes differ or a value is missing/NaN."""
    if shape_of(a) != shape_of(b):
        return math.inf
    worst = 0.0
    for x, y in zip(flatten(a), flatten(b)):
        if x is None or y is None:  # NaN / inf are written as null
            if x is not y:
                return math.inf
            continue
        worst = max(worst, abs(x - y))
    return worst


class Mismatch(Exception):
    pass


def compare_traces(tram, ref, tolerance, scale=1.0):
    """Returns (max param diff, max loss diff, max scalar diff); raises Mismatch with the first bad value."""
    if len(tram["steps"]) != len(ref["steps"]):
        raise Mismatch(f"tram-trace has {len(tram['steps'])} steps, the reference {len(ref['steps'])}")
    worst_params = worst_loss = worst_other = 0.0
    for t, r in zip(tram["steps"], ref["steps"]):
        step = t["step"]
        if t["batch"] != r["batch"]:
            raise Mismatch(f"step {step}: batch {t['batch']} vs {r['batch']}")
        if t["ascent_skipped"] != r["ascent_skipped"]:
            raise Mismatch(f"step {step}: ascent_skipped {t['ascent_skipped']} vs {r['ascent_skipped']}")
        loss = diff(t["loss"], r["loss"])
        worst_loss = max(worst_loss, loss)
        if not loss <= tolerance:
            raise Mismatch(f"step {step}: loss {t['loss']!r} vs reference {r['loss']!r} (|diff| {loss:.3e})")
        norm = diff(t["ascent_norm"], r["ascent_norm"]) / max(1.0, abs(r["ascent_norm"] or 0.0))
        # radius = scale * d: its error is d's, times the scale.
        radius = diff(t["radius"], r["radius"]) / max(1.0, scale)
        d = diff(t["d"], r["d"])
        e_norm = diff(t["perturbation_norm"], r["perturbation_norm"])
        perturbed_loss = diff(t["perturbed_loss"], r["perturbed_loss"])
        sharpness = diff(t["sharpness"], r["sharpness"])
        worst_other = max(worst_other, norm, radius, d, e_norm, perturbed_loss, sharpness)
        for name, value, size in (("ascent_norm (relative)", norm, t["ascent_norm"]),
                                  ("radius (/ scale)", radius, t["radius"]), ("d", d, t["d"]),
                                  ("perturbation_norm", e_norm, t["perturbation_norm"]),
                                  ("perturbed_loss", perturbed_loss, t["perturbed_loss"]),
                                  ("sharpness", sharpness, t["sharpness"])):
            if not value <= tolerance:
                raise Mismatch(f"step {step}: {name} {size!r} vs reference (|diff| {value:.3e})")
        if sorted(t["params"]) != sorted(r["params"]):
            raise Mismatch(f"step {step}: parameter names {sorted(t['params'])} vs {sorted(r['params'])}")
        for name in t["params"]:
            p = diff(t["params"][name], r["params"][name])
            worst_params = max(worst_params, p)
            if not p <= tolerance:
                raise Mismatch(f"step {step}: parameter {name}: max |diff| {p:.3e} > {tolerance:g}")
    return worst_params, worst_loss, worst_other


def run_tool(command, what):
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise Mismatch(f"{what} failed (exit {result.returncode}): {result.stderr.strip()}")
    return json.loads(result.stdout)


def check_relations(name, case, traces):
    """The case's "checks" against other cases' tram-trace output; returns notes for the report line."""
    notes = []
    checks = case.get("checks", {})
    mine = traces[name]
    for kind, other in checks.items():
        if other not in traces:
            raise Mismatch(f"checks.{kind}: case '{other}' was not run")
        theirs = traces[other]
        if kind == "same_params_as":
            for a, b in zip(mine["steps"], theirs["steps"]):
                if a["params"] != b["params"] or a["loss"] != b["loss"]:
                    worst = max(diff(a["params"][k], b["params"][k]) for k in a["params"])
                    raise Mismatch(f"checks.same_params_as {other}: step {a['step']} differs "
                                   f"(max |diff| {worst:.3e}); expected bit-identical")
            if len(mine["steps"]) != len(theirs["steps"]):
                raise Mismatch(f"checks.same_params_as {other}: different numbers of steps")
            notes.append(f"bit-identical to {other}")
        elif kind == "differs_from":
            a, b = mine["steps"][-1]["params"], theirs["steps"][-1]["params"]
            worst = max(diff(a[k], b[k]) for k in a)
            if not worst > SENSITIVITY:
                raise Mismatch(f"checks.differs_from {other}: final parameters differ by only {worst:.3e}")
            notes.append(f"differs from {other} by {worst:.2e}")
        else:
            raise Mismatch(f"unknown check '{kind}' (known: same_params_as, differs_from)")
    return notes


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tram-trace", required=True, help="path of the tram-trace executable")
    parser.add_argument("cases", nargs="*", help="case files (default: cases/*.json next to this script)")
    args = parser.parse_args()

    paths = args.cases or sorted(glob.glob(os.path.join(HERE, "cases", "*.json")))
    if not paths:
        print("compare.py: no cases found", file=sys.stderr)
        return 1

    failures = 0
    cases, traces, lines = {}, {}, {}
    for path in paths:
        name = os.path.splitext(os.path.basename(path))[0]
        try:
            with open(path) as f:
                case = json.load(f)
            cases[name] = case
            dtype = case.get("dtype", "float64")
            tolerance = TOLERANCE[dtype]
            tram = run_tool([args.tram_trace, path], "tram-trace")
            try:
                ref = reference.run(case)
            except reference.CaseError as error:
                raise Mismatch(f"reference.py: {error}") from error
            traces[name] = tram
            scale = float(case.get("options", {}).get("scale", 1.0))
            worst_params, worst_loss, worst_other = compare_traces(tram, ref, tolerance, scale)
            lines[name] = (f"{case['method']:6s} {dtype} {len(tram['steps'])} steps: max |diff| params "
                           f"{worst_params:.2e}, loss {worst_loss:.2e}, norm/radius {worst_other:.2e} "
                           f"(tol {tolerance:g})")
        except (Mismatch, OSError, ValueError, KeyError) as error:
            failures += 1
            lines[name] = None
            print(f"FAIL {name}: {error}")
    for name in cases:
        if lines.get(name) is None:
            continue
        try:
            notes = check_relations(name, cases[name], traces)
        except Mismatch as error:
            failures += 1
            print(f"FAIL {name}: {error}")
            continue
        print(f"ok   {name}: {lines[name]}" + "".join(f"; {n}" for n in notes))
    print(f"{len(paths) - failures} of {len(paths)} cases agree" if not failures
          else f"{failures} of {len(paths)} cases FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
