"""What the program checks (check_torchrun.py, check_processes.py,
check_kill.py, check_soak.py) share: their command line, an environment
without an outer launcher's variables, a copy of a fixture model with dropout
off, and a reader of .safetensors files."""

import argparse
import json
import os
import shutil
import struct

# Nothing of an outer launcher may leak into the runs a check starts itself.
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")}


def check_arguments(doc, add=None):
    """The command line every check takes: --program, --model, --out, then
    `-- ARGS...` for the program. `add(parser)` adds a check's own options.
    Returns (options, ARGS without the "--")."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--program", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    if add:
        add(parser)
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args()
    return options, [a for a in options.args if a != "--"]


def model_without_dropout(source, out):
    """Copies the model directory `source` to OUT/model with every dropout set
    to 0 (so one process and several ranks draw nothing different); returns
    the copy's path. OUT is emptied first."""
    shutil.rmtree(out, ignore_errors=True)
    model = os.path.join(out, "model")
    shutil.copytree(source, model)
    with open(os.path.join(model, "config.json")) as f:
        config = json.load(f)
    for key in list(config):
        if key.endswith("dropout_prob") or key.endswith("dropout"):
            config[key] = 0.0
    with open(os.path.join(model, "config.json"), "w") as f:
        json.dump(config, f)
    return model


def tensors(path):
    """The tensors of a .safetensors file as float64, read by hand (8-byte
    little-endian header length, JSON header, raw data)."""
    import torch
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    dtypes = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
    out = {}
    for name, entry in header.items():
        if name != "__metadata__":
            begin, end = entry["data_offsets"]
            raw = bytearray(data[8 + length + begin:8 + length + end])
            out[name] = torch.frombuffer(raw, dtype=dtypes[entry["dtype"]]).to(torch.float64)
    return out


def max_difference(a, b):
    """max |a - b| over the tensors of two checkpoints; None when their names differ."""
    if a.keys() != b.keys() or not a:
        return None
    return max(float((a[k] - b[k]).abs().max()) for k in a)
