#!/usr/bin/env python3
"""Kill anywhere, resume, and end exactly where an uninterrupted run ends.

    check_kill.py --program build/examples/tram-vit --model DIR --out DIR -- ARGS...

ARGS must include --steps, --save-every and --eval-every; the kill points
below assume --steps 12 --save-every 3. One run goes straight through; the
other is SIGKILLed at each of these points (the program stalls there when
TRAM_TEST_STALL=<point>@<step> is set, see hf/src/training/trainer.cpp) and
resumed with --resume each time:

  step@2             mid-run, before the first save: --resume must refuse
                     ("nothing to resume"), and the run starts afresh
  state-temporary@6  the state of step 6 half-way: written to its temporary
                     file, not yet renamed
  state-between@9    the state file of step 9 in place, run.json not yet
  step@11            mid-run between saves, that step's rows unflushed
  final@12           after the final evaluation, before the checkpoint and
                     summary.json
Then a second run is SIGKILLed at 30%, 55% and 80% of the straight run's
training time (past its start-up), wherever that lands, and resumed each time (or started afresh, if it had
no state yet).

After every kill, the state on disk is checked on its own: run.json parses,
names the state file of the last completed save, and that file has the size
and CRC-32 run.json records (the last good state is never lost or
half-written). At the end, the state directory holds only the final state
(run-12.pt, run.json: no earlier state, no killed write's temporary), and
metrics.csv and the checkpoint's weights are
byte-identical to the straight run's, and summary.json equal but for its wall
time (elapsed_seconds), for both. Exit 0 when all hold; 1 with the reason otherwise.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib

from launch_util import CLEAN_ENV, check_arguments


def fail(message):
    sys.exit(f"check_kill: {message}")


def run(command, stall=None):
    """Runs `command` to its end; returns (exit code, stderr)."""
    env = dict(CLEAN_ENV)
    if stall:
        env["TRAM_TEST_STALL"] = stall
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    return result.returncode, result.stderr


def kill_at(command, stall):
    """Starts `command` with TRAM_TEST_STALL=`stall` and SIGKILLs it as soon as
    it announces that it stalls there; returns the seconds that took."""
    began = time.monotonic()
    env = dict(CLEAN_ENV, TRAM_TEST_STALL=stall)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    deadline = time.monotonic() + 600
    for line in process.stderr:
        seen.append(line)
        if line.strip() == f"tram-test-stall: {stall}":
            took = time.monotonic() - began
            process.send_signal(signal.SIGKILL)
            process.wait()
            return took
        if time.monotonic() > deadline:
            break
    process.kill()
    process.wait()
    fail(f"the run never reached {stall} (exit {process.returncode}):\n{''.join(seen)[-3000:]}")


def kill_after(command, seconds):
    """Starts `command` and SIGKILLs it after `seconds` (if it still runs)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=CLEAN_ENV)
    try:
        process.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True


def check_state(out, expected_step):
    """The state on disk is complete and is that of `expected_step` (None: any)."""
    state = os.path.join(out, "state")
    try:
        with open(os.path.join(state, "run.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError) as error:
        fail(f"{state}/run.json is unreadable after a kill: {error}")
    if expected_step is not None and meta["step"] != expected_step:
        fail(f"{state}/run.json is the state of step {meta['step']}, expected {expected_step}")
    path = os.path.join(state, meta["file"])
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        fail(f"{path}, which run.json names, is gone after a kill: {error}")
    if len(data) != meta["bytes"] or zlib.crc32(data) != meta["crc32"]:
        fail(f"{path} is not what run.json describes ({len(data)} bytes, CRC {zlib.crc32(data)}; "
             f"run.json: {meta['bytes']} bytes, CRC {meta['crc32']})")
    if os.path.getsize(os.path.join(out, "metrics.csv")) < meta["metrics_bytes"]:
        fail(f"{out}/metrics.csv is shorter than when the state of step {meta['step']} was saved")
    return meta["step"]


def read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


def main():
    options, extra = check_arguments(__doc__)
    arguments = [options.program, "--model", options.model, "--quiet", *extra]
    shutil.rmtree(options.out, ignore_errors=True)
    os.makedirs(options.out)

    straight = os.path.join(options.out, "straight")
    began = time.monotonic()
    code, err = run([*arguments, "--out", straight])
    wall = time.monotonic() - began
    if code != 0:
        fail(f"the uninterrupted run exited with {code}:\n{err[-3000:]}")

    killed = os.path.join(options.out, "killed")
    fresh = [*arguments, "--out", killed]
    resume = [*fresh, "--resume"]

    kill_at(fresh, "step@2")
    code, err = run(resume)
    if code == 0 or "nothing to resume" not in err:
        fail(f"--resume before any save exited {code} without saying there is nothing to resume:\n{err[-3000:]}")
    kill_at(fresh, "state-temporary@6")  # afresh, as the message says
    check_state(killed, 3)
    kill_at(resume, "state-between@9")
    check_state(killed, 6)
    kill_at(resume, "step@11")
    check_state(killed, 9)
    kill_at(resume, "final@12")
    check_state(killed, 12)
    code, err = run(resume)
    if code != 0:
        fail(f"the last --resume exited with {code}:\n{err[-3000:]}")
    print("check_kill: killed at step@2 (--resume refused, started afresh), state-temporary@6, state-between@9, "
          "step@11, final@12; resumed each time")
    compare(straight, killed)

    # Wherever kills at a time land: a fresh run killed at 30%, 55% and 80% of
    # the straight run's training time (after its start-up: loading LibTorch,
    # the model and the data, timed to the first step), resumed each time (or
    # started afresh when it had no state yet), then run to its end.
    startup = kill_at([*arguments, "--out", os.path.join(options.out, "probe")], "step@1")
    timed = os.path.join(options.out, "timed")
    fresh = [*arguments, "--out", timed]
    landed = []
    for fraction in (0.3, 0.55, 0.8, None):
        meta = os.path.join(timed, "state", "run.json")
        step = check_state(timed, None) if os.path.exists(meta) else None
        command = fresh if step is None else [*fresh, "--resume"]
        if fraction is None:
            code, err = run(command)
            if code != 0:
                fail(f"the run after the timed kills exited with {code}:\n{err[-3000:]}")
            break
        at = startup + fraction * max(wall - startup, 0.0)
        was_killed = kill_after(command, at)
        after = check_state(timed, None) if os.path.exists(meta) else None
        landed.append(f"{at:.2f} s: {'killed' if was_killed else 'finished'}, "
                      f"{'no state' if after is None else f'state of step {after}'}")
    print(f"check_kill: timed kills ({'; '.join(landed)}), then resumed to the end")
    compare(straight, timed)


def compare(straight, killed):
    a, b = read(os.path.join(straight, "metrics.csv")), read(os.path.join(killed, "metrics.csv"))
    if a != b:
        fail(f"metrics.csv differs from the uninterrupted run's:\n--- straight\n{a[-2000:]}\n--- killed\n{b[-2000:]}")
    sa, sb = (json.loads(read(os.path.join(d, "summary.json"))) for d in (straight, killed))
    for summary in (sa, sb):
        summary.pop("elapsed_seconds")
    if sa != sb:
        fail(f"summary.json differs from the uninterrupted run's (but for elapsed_seconds):\n{sa}\n{sb}")
    weights = "checkpoint/model.safetensors"
    if read(os.path.join(straight, weights), "rb") != read(os.path.join(killed, weights), "rb"):
        fail(f"{weights} differs from the uninterrupted run's")
    state = sorted(os.listdir(os.path.join(killed, "state")))
    if state != ["run-12.pt", "run.json"]:
        fail(f"{killed}/state holds {state}: earlier states or killed writes' temporaries were left behind")
    print(f"check_kill: {killed}: metrics.csv ({a.count(chr(10))} lines), summary.json and {weights} equal "
          f"the uninterrupted run's")


if __name__ == "__main__":
    main()
