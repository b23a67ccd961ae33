#!/usr/bin/env python3
"""Rewrites tram's CUDA sources (src/cuda) into host C++ for cuda_emu.h:
includes of the CUDA runtime become cuda_emu.h, and every
`kernel<<<grid, block, shared, stream>>>(args);` becomes
`::emu::launch(grid, block, [&] { kernel(args); });`.

usage: emulate.py SRC_CUDA_DIR OUT_DIR
"""
import pathlib
import re
import sys

LAUNCH = re.compile(r"([\w:]+(?:<[^<>;]*>)?)\s*<<<(.*?)>>>\((.*?)\);", re.S)


def launch(match):
    kernel, config, args = match.group(1), match.group(2), match.group(3)
    grid, block = [part.strip() for part in config.split(",")][:2]
    return f"::emu::launch({grid}, {block}, [&] {{ {kernel}({args}); }});"


def main():
    src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(list(src.glob("*.cu")) + list(src.glob("*.cuh")) + list(src.glob("*.h"))):
        text = path.read_text()
        text = text.replace("#include <cuda_runtime.h>", '#include "cuda_emu.h"')
        text = text.replace("#include <cuda_bf16.h>", "").replace("#include <cuda_fp16.h>", "")
        text = text.replace("cudaGetLastError()", "emu_last_error()")
        text = LAUNCH.sub(launch, text)
        name = path.name[:-3] + "_cu.cpp" if path.suffix == ".cu" else path.name
        target = out / name
        if not target.exists() or target.read_text() != text:
            target.write_text(text)


if __name__ == "__main__":
    main()
