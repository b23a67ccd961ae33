#!/usr/bin/env python3
"""Data-parallel training as real OS processes over a TCPStore on 127.0.0.1.

    check_processes.py --program build/examples/tram-vit --model DIR --out DIR -- ARGS...

1. Two ranks, started as two processes with --rendezvous tcp://127.0.0.1:PORT
   (a port found free at run time), train exactly like one process on the
   whole batch: the checkpoints agree to 1e-10 in float64 (dropout set to 0).
2. SIGKILL one rank in the middle of a long run: the other exits non-zero
   within its --collective-timeout (plus start-up slack), and its message
   names the collective that failed.
Exit 0 when both hold; 1 with the reason otherwise.
"""

import os
import signal
import socket
import subprocess
import sys
import time

from launch_util import CLEAN_ENV, check_arguments, max_difference, model_without_dropout, tensors


def fail(message):
    sys.exit(f"check_processes: {message}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ranks(program, arguments, out, extra=()):
    rendezvous = f"tcp://127.0.0.1:{free_port()}"
    return [subprocess.Popen([program, *arguments, "--world-size", "2", "--rank", str(rank), "--rendezvous",
                              rendezvous, "--out", out, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=CLEAN_ENV) for rank in (0, 1)]


def main():
    options, extra = check_arguments(__doc__)

    model = model_without_dropout(options.model, options.out)
    arguments = ["--model", model, "--dtype", "float64", "--quiet", *extra]

    # 1. Two processes = one process.
    one = os.path.join(options.out, "one")
    result = subprocess.run([options.program, *arguments, "--steps", "3", "--out", one], capture_output=True,
                            text=True, env=CLEAN_ENV, timeout=600)
    if result.returncode != 0:
        fail(f"the one-process run exited with {result.returncode}:\n{result.stderr[-3000:]}")
    two = os.path.join(options.out, "two")
    processes = ranks(options.program, [*arguments, "--steps", "3"], two)
    for rank, process in enumerate(processes):
        _, err = process.communicate(timeout=600)
        if process.returncode != 0:
            fail(f"rank {rank} of the two-process run exited with {process.returncode}:\n{err[-3000:]}")
    a = tensors(os.path.join(one, "checkpoint", "model.safetensors"))
    b = tensors(os.path.join(two, "checkpoint", "model.safetensors"))
    worst = max_difference(a, b)
    if worst is None:
        fail("the two checkpoints hold different tensors")
    if worst > 1e-10:
        fail(f"two processes differ from one by {worst:.3g} (> 1e-10)")
    print(f"check_processes: two processes over a TCPStore = one process ({len(a)} tensors, max |diff| {worst:.2g})")

    # 2. A rank killed mid-run: the survivor fails within its timeout, naming the collective.
    timeout = 10
    processes = ranks(options.program, [*arguments, "--steps", "100000"], os.path.join(options.out, "killed"),
                      ("--collective-timeout", str(timeout)))
    time.sleep(4)  # both ranks connected and training
    if any(p.poll() is not None for p in processes):
        fail("a rank ended before it could be killed:\n" + processes[0].stderr.read()[-3000:])
    processes[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    try:
        _, err = processes[0].communicate(timeout=timeout + 60)
    except subprocess.TimeoutExpired:
        processes[0].kill()
        fail(f"rank 0 still ran {timeout + 60} s after rank 1 was killed (collective timeout {timeout} s)")
    took = time.monotonic() - killed_at
    processes[1].wait()
    if processes[0].returncode == 0:
        fail("rank 0 exited 0 although rank 1 was killed")
    if "over the process group failed" not in err:
        fail(f"rank 0's message does not name the failed collective:\n{err[-3000:]}")
    first = next(line for line in err.splitlines() if "over the process group failed" in line)
    print(f"check_processes: rank 1 killed; rank 0 exited {processes[0].returncode} after {took:.1f} s: "
          f"{first[:200]}")


if __name__ == "__main__":
    main()
