#!/usr/bin/env python3
"""Resident memory stays flat over a long run.

    check_soak.py --program build/examples/tram-vit --model DIR --out DIR
                  [--bound-mib 8] -- ARGS...

Runs the program with ARGS (which set --steps N, e.g. 2000) and samples its
resident set size (VmRSS in /proc/<pid>/status) every 50 ms until the run
reaches the end of its training and final evaluation (the test-only stall
point final@N, see hf/src/training/trainer.cpp; the run is killed there: what
follows, writing the checkpoint, is not part of the loop). Compares the peak of
the second fifth of the samples (past the start-up and the allocator's
warm-up) with the peak of the last fifth. Exit 0 when the last fifth's peak
exceeds the second fifth's by at most --bound-mib MiB; 1 otherwise, or when
the run fails. Writes the samples to OUT/rss.csv (seconds,rss_kib).
"""

import os
import subprocess
import signal
import sys
import threading
import time

from launch_util import CLEAN_ENV, check_arguments


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def main():
    options, extra = check_arguments(
        __doc__, lambda parser: parser.add_argument("--bound-mib", type=float, default=8.0))
    os.makedirs(options.out, exist_ok=True)
    command = [options.program, "--model", options.model, "--quiet", "--out", os.path.join(options.out, "run"),
               *extra]
    if "--steps" not in command:
        sys.exit("check_soak: ARGS must set --steps")

    steps = extra[extra.index("--steps") + 1]
    stall = f"final@{steps}"
    began = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=dict(CLEAN_ENV, TRAM_TEST_STALL=stall))
    finished, err = threading.Event(), []

    def watch():
        for line in process.stderr:
            err.append(line)
            if line.strip() == f"tram-test-stall: {stall}":
                finished.set()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    samples = []
    while process.poll() is None and not finished.is_set():
        value = rss_kib(process.pid)
        if value is not None:
            samples.append((time.monotonic() - began, value))
        time.sleep(0.05)
    if not finished.is_set():
        watcher.join(timeout=5)
        sys.exit(f"check_soak: {' '.join(command)} exited with {process.returncode} before the end of its "
                 f"training:\n{''.join(err)[-3000:]}")
    process.send_signal(signal.SIGKILL)
    process.wait()
    if len(samples) < 50:
        sys.exit(f"check_soak: only {len(samples)} samples: the run is too short to tell (raise --steps)")
    with open(os.path.join(options.out, "rss.csv"), "w") as f:
        f.write("seconds,rss_kib\n")
        f.writelines(f"{t:.3f},{v}\n" for t, v in samples)

    fifth = len(samples) // 5
    early = max(v for _, v in samples[fifth:2 * fifth])
    late = max(v for _, v in samples[4 * fifth:])
    growth_mib = (late - early) / 1024
    print(f"check_soak: {len(samples)} samples over {samples[-1][0]:.1f} s; peak RSS {early / 1024:.1f} MiB in the "
          f"second fifth, {late / 1024:.1f} MiB in the last fifth: {growth_mib:+.2f} MiB "
          f"(bound {options.bound_mib:g} MiB); overall peak {max(v for _, v in samples) / 1024:.1f} MiB")
    if growth_mib > options.bound_mib:
        sys.exit(f"check_soak: resident memory grew by {growth_mib:.2f} MiB over the run "
                 f"(more than {options.bound_mib:g} MiB); samples in {options.out}/rss.csv")


if __name__ == "__main__":
    main()
