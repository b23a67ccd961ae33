"""tram-study's driver and its worker processes, end to end on the real
corpora: two runs at a time give the records, logs and table of the runs
asked for; a second invocation computes nothing; a run's record does not
depend on how many ran beside it; and a driver killed with SIGKILL takes its
workers with it.

usage: check_driver.py --program build/examples/study/tram-study --out DIR
"""

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

STUDY = ["--experiments", "lm", "--methods", "adam,sam", "--seeds", "2"]


def study(program, out, *args):
    result = subprocess.run([program, *STUDY, "--out", out, *args], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        sys.exit(f"tram-study {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def records(out):
    found = {}
    for path in sorted(glob.glob(os.path.join(out, "runs", "lm", "*.json"))):
        with open(path) as f:
            record = json.load(f)
        record.pop("seconds")  # the only field allowed to differ between two computations
        found[os.path.basename(path)] = record
    return found


def workers_of(driver_pid):
    """The pids of live processes whose command line names `--driver PID`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and b"--driver" in args and args[args.index(b"--driver") + 1] == str(driver_pid).encode():
            pids.append(int(entry))
    return pids


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--program", required=True)
    parser.add_argument("--out", required=True)
    options = parser.parse_args()
    shutil.rmtree(options.out, ignore_errors=True)
    parallel, serial, killed = (os.path.join(options.out, name) for name in ("parallel", "serial", "killed"))

    text = study(options.program, parallel, "--jobs", "2")
    expected = {f"{m}-seed{s}.json" for m in ("adam", "sam") for s in (0, 1)}
    got = records(parallel)
    assert set(got) == expected, f"records {sorted(got)}, expected {sorted(expected)}"
    for name, record in got.items():
        assert record["fingerprint"].endswith(" threads=1"), f"{name}: fingerprint {record['fingerprint']!r}"
    assert "2 run(s) at a time, 1 thread(s) each" in text, text
    logs = sorted(glob.glob(os.path.join(parallel, "lm", "worker-*.log")))
    assert len(logs) == 2, f"worker logs {logs}: expected two workers"
    logged = "".join(open(log).read() for log in logs)
    for name in expected:
        method, seed = name[:-len(".json")].rsplit("-seed", 1)
        assert f"=== lm {method} seed {seed}\n" in logged, f"no worker log names the run {name}"
    assert "(4 runs computed" in text, text
    with open(os.path.join(parallel, "lm", "table.md")) as f:
        table = f.read()
    for row in ("| pre-trained", "| adam", "| sam"):
        assert row in table, f"table.md lacks the row {row!r}:\n{table}"

    again = study(options.program, parallel, "--jobs", "2")
    assert "(0 runs computed" in again, again

    # One run at a time, from the same cached pre-training: the same records.
    os.makedirs(serial)
    shutil.copytree(os.path.join(parallel, "lm", "pretrained"), os.path.join(serial, "lm", "pretrained"))
    study(options.program, serial, "--jobs", "1")
    assert records(serial) == got, "the records of --jobs 1 differ from those of --jobs 2"

    # SIGKILL the driver while its workers pre-train: they end with it.
    driver = subprocess.Popen([options.program, *STUDY, "--out", killed, "--jobs", "2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not workers_of(driver.pid):
        assert time.time() < deadline, "no worker started within 60 s"
        assert driver.poll() is None, f"the driver ended early ({driver.returncode})"
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.time() + 10
    while workers_of(driver.pid):
        assert time.time() < deadline, f"workers {workers_of(driver.pid)} outlived their killed driver by 10 s"
        time.sleep(0.05)
    print("check_driver: records, logs, table, resume, --jobs 1 = --jobs 2, workers die with the driver: ok")


if __name__ == "__main__":
    main()
