#!/usr/bin/env python3
"""Checks tram-trace itself: bad cases and the run of every method.

1. Bad cases (invalid JSON, missing fields, shape mismatches, unknown method
   or option, missing noise, ...): tram-trace must exit with status 2, write
   nothing to stdout, and name the case file and the field on stderr.
2. Every factory method runs on a small case with noise: exit 0, one record
   per step, finite numbers, and the trust-region bookkeeping holds
   (radius = clamp(scale * d, 0, max_radius) for TRAM, d = 0 and the fixed
   radius otherwise). Running twice gives the same bytes, and -o writes what
   stdout would.

Needs Python only (no torch). Prints one line per check; exits non-zero on
any failure.
"""

import argparse
import copy
import json
import math
import os
import random
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
EXIT_ERROR = 2


def base_case(seed=3):
    """A small valid case (4 -> 5 -> 3 tanh MLP, two batches of 6 rows with noise)."""
    rng = random.Random(seed)
    layers = [4, 5, 3]

    def matrix(rows, cols, scale):
        return [[rng.uniform(-scale, scale) for _ in range(cols)] for _ in range(rows)]

    params = {}
    for i in range(len(layers) - 1):
        params[f"{2 * i}.weight"] = matrix(layers[i + 1], layers[i], 0.5)
        params[f"{2 * i}.bias"] = matrix(1, layers[i + 1], 0.5)[0]
    batches = [{"x": matrix(6, 4, 1.5), "y": [rng.randrange(3) for _ in range(6)],
                "noise": matrix(6, 4, 0.01)} for _ in range(2)]
    return {"layers": layers, "activation": "tanh", "dtype": "float64", "params": params,
            "batches": batches, "method": "sam", "options": {"rho": 0.05},
            "base": {"name": "sgd", "lr": 0.1, "momentum": 0.9}, "steps": 3}


def edit(change):
    case = base_case()
    change(case)
    return case


def without(key):
    return edit(lambda c: c.pop(key))


def setting(path, value):
    def change(case):
        target = case
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit(change)


# name -> (case as a dict, or raw text for invalid JSON, and the field the message must name)
BAD_CASES = {
    "invalid JSON": ('{"layers": [4, 5, 3], ', "not valid JSON"),
    "top level not an object": ("[1, 2]", "(top level)"),
    "missing layers": (without("layers"), "'layers'"),
    "missing params": (without("params"), "'params'"),
    "missing batches": (without("batches"), "'batches'"),
    "missing method": (without("method"), "'method'"),
    "missing steps": (without("steps"), "'steps'"),
    "layers not a list": (setting(["layers"], "4,5,3"), "'layers'"),
    "one layer": (setting(["layers"], [4]), "'layers'"),
    "bad activation": (setting(["activation"], "gelu"), "'activation'"),
    "bad dtype": (setting(["dtype"], "float16"), "'dtype'"),
    "unknown field": (setting(["lr"], 0.1), "'lr'"),
    "negative steps": (setting(["steps"], -1), "'steps'"),
    "fractional steps": (setting(["steps"], 2.5), "'steps'"),
    "weight shape": (setting(["params", "0.weight"], [[0.1] * 4] * 4), "'params.0.weight'"),
    "weight row length": (edit(lambda c: c["params"]["2.weight"][1].append(0.0)), "'params.2.weight[1]'"),
    "bias not numbers": (setting(["params", "0.bias"], ["a"] * 5), "'params.0.bias[0]'"),
    "missing parameter": (edit(lambda c: c["params"].pop("2.bias")), "'params.2.bias'"),
    "unknown parameter": (setting(["params", "1.weight"], [[0.0]]), "'params.1.weight'"),
    "empty batches": (setting(["batches"], []), "'batches'"),
    "x row length": (edit(lambda c: c["batches"][1]["x"][2].pop()), "'batches[1].x[2]'"),
    "x rows vs y": (edit(lambda c: c["batches"][0]["y"].append(0)), "'batches[0].x'"),
    "label out of range": (edit(lambda c: c["batches"][0]["y"].__setitem__(2, 3)), "'batches[0].y[2]'"),
    "label not an integer": (edit(lambda c: c["batches"][0]["y"].__setitem__(0, 1.5)), "'batches[0].y[0]'"),
    "noise shape": (edit(lambda c: c["batches"][1]["noise"].pop()), "'batches[1].noise'"),
    "unknown method": (setting(["method"], "adamax"), "'method'"),
    "unknown option": (setting(["options"], {"rho": 0.05, "rhoo": 1}), "rhoo"),
    "bad option value": (setting(["options"], {"rho": -1}), "rho"),
    "option not a number": (setting(["options"], {"rho": [1]}), "'options.rho'"),
    "unknown base": (setting(["base"], {"name": "rmsprop"}), "'base.name'"),
    "unknown base key": (setting(["base"], {"name": "sgd", "learning_rate": 0.1}), "'base.learning_rate'"),
    "betas not a pair": (setting(["base"], {"name": "adam", "betas": [0.9]}), "'base.betas'"),
    "key in base and options": (setting(["options"], {"rho": 0.05, "lr": 0.2}), "'base.lr'"),
    "plain method, other base": (edit(lambda c: c.update(method="sgd", options={},
                                                         base={"name": "adam"})), "'base.name'"),
    "noise needed, none given": (edit(lambda c: [b.pop("noise") for b in c["batches"]] and
                                      c.update(method="tram-noise", options={})), "'batches[0].noise'"),
}

# Every method the factory names, with options that exercise its parts.
METHODS = [
    ("sgd", {}, {"name": "sgd", "lr": 0.1, "momentum": 0.9}),
    ("adam", {}, {"name": "adam", "lr": 0.01}),
    ("adamw", {}, {"name": "adamw", "lr": 0.01, "weight_decay": 0.1}),
    ("sam", {"rho": 0.05}, None),
    ("asam", {"rho": 0.5, "eta": 0.0}, None),
    ("fsam", {"gamma": 0.1, "fisher_eta": 0.1}, None),
    ("tram-prev", {"scale": 10.0}, None),
    ("tram-prev", {"scale": 100.0, "max_radius": 0.05, "formula": "released", "eta": 0.0}, None),
    ("tram-pre", {"divergence": "symmetric"}, {"name": "adam", "lr": 0.01}),
    ("tram-noise", {"reduction": "legacy", "scale": 50.0}, None),
    ("tram-fisher", {}, None),
    ("tram-fisher", {"radius": "trust_region", "scale": 100.0}, None),
    ("trpo", {"lambda": 0.5}, None),
    ("r3f", {}, None),
    ("mesa", {"ema_decay": 0.9, "temperature": 2.0}, None),
    ("asam+trpo", {"rho": 0.5}, None),
    ("sam+r3f", {"rho": 0.05}, None),
    ("tram-prev+mesa", {"ema_decay": 0.5}, None),
    ("gsam", {"alpha": 0.4}, None),
    ("looksam", {"k": 2}, None),
    ("esam", {"beta": 0.5, "gamma": 0.5}, None),
    ("friendly-sam", {"sigma": 1.0, "friendly_lambda": 0.9}, None),
    ("vasso", {"theta": 0.9}, {"name": "adam", "lr": 0.01}),
    ("wsam", {"gamma": 0.9, "decouple": "false"}, None),
    ("friendly-sam+trpo", {"lambda": 0.2}, None),
]
NO_ASCENT = ("sgd", "adam", "adamw", "trpo", "r3f", "mesa")
PEERS = ("gsam", "looksam", "esam", "friendly-sam", "vasso", "wsam")
FIXED_RADIUS = {"sam": "rho", "asam": "rho", "fsam": "gamma", "tram-fisher": "gamma", **{p: "rho" for p in PEERS}}
DEFAULT_RADIUS = {"sam": 0.05, "asam": 0.5, "fsam": 0.1, "tram-fisher": 0.1, **{p: 0.05 for p in PEERS}}


def finite(value):
    if isinstance(value, list):
        return all(finite(v) for v in value)
    return isinstance(value, (int, float)) and math.isfinite(value)


def check_trace(method, options, case, trace):
    steps = trace["steps"]
    assert len(steps) == case["steps"], f"{len(steps)} steps, expected {case['steps']}"
    head = method.split("+")[0]
    for record in steps:
        assert record["batch"] == record["step"] % len(case["batches"]), "wrong batch"
        for key in ("loss", "d", "ascent_norm", "regularizer"):
            assert finite(record[key]), f"step {record['step']}: {key} = {record[key]!r}"
        assert all(finite(v) for v in record["params"].values()), f"step {record['step']}: non-finite parameter"
        assert sorted(record["params"]) == sorted(case["params"]), "parameter names differ from the case's"
        assert record["d"] >= 0, f"step {record['step']}: d = {record['d']} < 0"
        assert len(record["radius"]) == 1, f"radius {record['radius']}: expected one group"
        radius = record["radius"][0]
        trust_region = head.startswith("tram-") and not (head == "tram-fisher" and
                                                         options.get("radius") != "trust_region")
        if head in NO_ASCENT:
            expected = 0.0
        elif trust_region:
            expected = max(0.0, options.get("scale", 1.0) * record["d"])
            expected = min(expected, options.get("max_radius", math.inf))
        else:
            assert record["d"] == 0, f"step {record['step']}: d = {record['d']} without a trust region"
            expected = options.get(FIXED_RADIUS[head], DEFAULT_RADIUS[head])
            if head == "esam":
                expected /= options.get("beta", 0.5)  # SWP's radius rho / beta
            if head == "looksam" and record["step"] % options.get("k", 5) != 0:
                expected = 0.0  # a one-pass step: no ascent
        assert abs(radius - expected) <= 1e-15 * max(1.0, expected), \
            f"step {record['step']}: radius {radius}, expected {expected}"
        if "+" not in method and head not in ("trpo", "r3f", "mesa"):
            assert record["regularizer"] == 0, f"step {record['step']}: regularizer without one"
    if head.startswith("tram-") and trust_region:
        assert any(s["d"] > 0 for s in steps), "d is 0 at every step"


def run(tool, path, *extra):
    return subprocess.run([tool, path, *extra], capture_output=True, text=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tram-trace", required=True)
    args = parser.parse_args()
    tool = args.tram_trace
    failures = 0

    def report(ok, name, detail=""):
        nonlocal failures
        failures += 0 if ok else 1
        print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""))

    with tempfile.TemporaryDirectory(prefix="tram-trace-check-") as tmp:
        # --- command line --------------------------------------------------
        result = subprocess.run([tool], capture_output=True, text=True)
        report(result.returncode == EXIT_ERROR and "usage" in result.stderr, "no arguments",
               f"exit {result.returncode}, stderr {result.stderr.strip()!r}")
        missing = os.path.join(tmp, "no-such-case.json")
        result = run(tool, missing)
        report(result.returncode == EXIT_ERROR and missing in result.stderr, "missing case file",
               result.stderr.strip())

        # --- bad cases -----------------------------------------------------
        for name, (content, field) in BAD_CASES.items():
            path = os.path.join(tmp, "bad-" + name.replace(" ", "_").replace(",", "") + ".json")
            with open(path, "w") as f:
                f.write(content if isinstance(content, str) else json.dumps(content))
            result = run(tool, path)
            message = result.stderr.strip()
            ok = (result.returncode == EXIT_ERROR and result.stdout == "" and path in message
                  and field in message)
            report(ok, f"rejects {name}", f"exit {result.returncode}: {message}")

        # --- every method --------------------------------------------------
        for method, options, base in METHODS:
            case = base_case()
            case["method"], case["options"] = method, dict(options)
            if base is not None:
                case["base"] = base
            label = f"runs {method} {json.dumps(options)}"
            path = os.path.join(tmp, f"method-{len(os.listdir(tmp))}.json")
            with open(path, "w") as f:
                json.dump(case, f)
            result = run(tool, path)
            if result.returncode != 0:
                report(False, label, f"exit {result.returncode}: {result.stderr.strip()}")
                continue
            try:
                check_trace(method, options, case, json.loads(result.stdout))
                again = run(tool, path)
                assert again.stdout == result.stdout, "a second run wrote a different trace"
                report(True, label)
            except (AssertionError, KeyError, ValueError) as error:
                report(False, label, str(error))

        # --- -o writes what stdout would -------------------------------------
        path = os.path.join(tmp, "output.json")
        with open(path, "w") as f:
            json.dump(base_case(), f)
        out = os.path.join(tmp, "trace.json")
        written = run(tool, path, "-o", out)
        printed = run(tool, path)
        same = written.returncode == 0 and written.stdout == "" and open(out).read() == printed.stdout
        report(same, "-o FILE writes the trace stdout gets")

    print("all tram-trace checks passed" if not failures else f"{failures} tram-trace checks FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
