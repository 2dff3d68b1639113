"""Shared by scripts/tflite-fixtures.py and scripts/mlperf-fixtures.py: run TensorFlow Lite
Micro's Python interpreter (pip `tflite-micro`, reference kernels, double rounding) on int8
inputs and read its arena figures."""
import os
import re
import sys
import tempfile

import numpy as np
from tflite_micro import runtime as tflm

ARENA = 4 << 20


def run_tflm(tfl, xs_q):
    """Runs TFLM on each int8 input; returns (outputs, arena bytes dict: total, head, tail)."""
    it = tflm.Interpreter.from_bytes(tfl, arena_size=ARENA)
    outs = []
    for x in xs_q:
        it.set_input(x[None], 0)
        it.invoke()
        outs.append(np.array(it.get_output(0), dtype=np.int8).reshape(-1))
    # print_allocations() writes via MicroPrintf to the C stderr: capture fd 2.
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 2)
        try:
            it.print_allocations()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        log = f.read().decode(errors="replace")
    arena = {k: int(re.search(rf"Arena allocation {k} (\d+) bytes", log).group(1))
             for k in ("total", "head", "tail")}
    return np.stack(outs), arena
