#!/usr/bin/env python3
"""Record TensorFlow Lite Micro's outputs on the trainer's own `.tflite` exports.

Needs:  pip install tflite-micro numpy     (no TensorFlow), and a release build of the trainer
        (cargo build --release -p trainer)
Run:    python3 scripts/export-fixtures.py          (from the repo root)

For each architecture below: trains it for one epoch on 2,000 of the bundled digits (resized
and in colour where the architecture asks), writes `trainer export --format tflite` (which has
already checked that the file, imported back, gives the outputs of the blob `export --rounding
tflite` writes on every test image) and the first 16 test images as int8 inputs, runs TFLM's
Python interpreter (reference kernels, TFLite's double rounding; see scripts/tflite-fixtures.py)
on them, and writes into trainer/tests/fixtures/export/, per architecture NAME:
  NAME.tflite      the exported model
  NAME.inputs.bin  16 int8 inputs, one after another (batch 1 each)
  NAME.tflm.bin    TFLM's int8 outputs for them, one after another
  NAME.json        the command lines, shapes, operators, TFLM's version and arena_used_bytes
trainer/tests/tflite_export.rs imports each committed file and checks the runtime's outputs
equal TFLM's byte for byte; neither TFLM nor this script is needed to run that test.
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tflite_micro
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tflm_run import run_tflm  # noqa: E402  (the scripts folder's shared helper)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "trainer" / "tests" / "fixtures" / "export"
TRAINER = ROOT / "target" / "release" / "trainer"
N = 16

# Every built-in classifier whose layers differ in kind, and the example file whose stride-2
# convolutions need a PAD in TensorFlow Lite.
ARCHS = [
    ("ref-cnn", "ref-cnn"),
    ("tiny-resnet", "tiny-resnet"),
    ("tiny-inception", "tiny-inception"),
    ("ds-cnn", "ds-cnn"),
    ("resnet-8", "resnet-8"),
    ("mobilenet-v1-32", "mobilenet-v1-32"),
    ("ds-cnn-28x28", "examples/arch/ds-cnn-28x28.toml"),
]


def run(args):
    print("+", " ".join(str(a) for a in args), file=sys.stderr)
    subprocess.run([str(a) for a in args], check=True, cwd=ROOT)


def operators(tfl):
    m = fb.ModelT.InitFromPackedBuf(tfl, 0)
    names = {v: k for k, v in fb.BuiltinOperator.__dict__.items() if not k.startswith("_")}
    return [names[m.operatorCodes[op.opcodeIndex].builtinCode]
            for op in m.subgraphs[0].operators]


def main():
    if not TRAINER.exists():
        sys.exit(f"{TRAINER} is missing: cargo build --release -p trainer")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, arch in ARCHS:
            ck, vec, tfl_path = tmp / f"{name}.ckpt.json", tmp / f"{name}.vec", OUT / f"{name}.tflite"
            train = [TRAINER, "train", "--arch", arch, "--epochs", 1, "--train-count", 2000,
                     "--test-count", 200, "--quiet", "--out", ck]
            export = [TRAINER, "export", "--checkpoint", ck, "--format", "tflite", "--out",
                      tfl_path, "--vectors", vec, "--vector-count", N, "--train-count", 2000,
                      "--test-count", 200]
            run(train)
            run(export)
            tfl = tfl_path.read_bytes()
            raw = vec.read_bytes()
            count, length = np.frombuffer(raw[:8], dtype="<u4")
            xs = np.frombuffer(raw[8:], dtype=np.int8).reshape(count, length)
            m = fb.ModelT.InitFromPackedBuf(tfl, 0)
            sg = m.subgraphs[0]
            shape = [int(d) for d in sg.tensors[sg.inputs[0]].shape]
            outs, arena = run_tflm(tfl, xs.reshape([count] + shape[1:]))
            (OUT / f"{name}.inputs.bin").write_bytes(xs.tobytes())
            (OUT / f"{name}.tflm.bin").write_bytes(outs.astype(np.int8).tobytes())
            meta = {
                "architecture": arch,
                "commands": [" ".join(str(a) for a in c[1:]) for c in (train, export)],
                "input_shape": shape,
                "output_shape": [int(d) for d in sg.tensors[sg.outputs[0]].shape],
                "operators": operators(tfl),
                "inputs": int(count),
                "tflite_micro": getattr(tflite_micro, "__version__", "unknown"),
                "tflm_arena_bytes": arena,
                "distinct_outputs": len({o.tobytes() for o in outs}),
            }
            (OUT / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
            print(f"{name}: {len(tfl)} bytes, {meta['distinct_outputs']} distinct outputs of "
                  f"{count}, ops {sorted(set(meta['operators']))}", file=sys.stderr)


if __name__ == "__main__":
    main()
