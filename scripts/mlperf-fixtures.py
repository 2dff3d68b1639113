#!/usr/bin/env python3
"""Record the MLPerf Tiny reference models and TensorFlow Lite Micro's outputs on them.

Needs:  pip install tflite-micro numpy     (no TensorFlow)
Run:    python3 scripts/mlperf-fixtures.py [--tiny GIT_DIR] [--energyrunner GIT_DIR]

Writes into trainer/tests/fixtures/mlperf/, per model NAME (the file's stem upstream):
  NAME.tflite      the reference model, byte for byte as upstream has it
  NAME.inputs.bin  int8 inputs, one after another (batch 1 each)
  NAME.tflm.bin    TFLM's int8 outputs for them, one after another
  NAME.labels.bin  (keyword spotting only) the label of each input, one byte each
  NAME.json        source (repository, commit, path, sha256, licence), shapes, operators,
                   TFLM's arena_used_bytes and, where labels exist, TFLM's top-1 accuracy

Sources, pinned by commit (the sha256 of each file is checked):
  github.com/mlcommons/tiny  benchmark/training/<task>/trained_models/*.tflite   Apache-2.0
  github.com/eembc/energyrunner  datasets/kws01/*.bin + y_labels.csv   CC-BY-4.0 (Speech
      Commands v2, by Pete Warden), the 1,000 official keyword-spotting inputs of the runner
Without --tiny / --energyrunner (a git directory, e.g. a bare clone), files are downloaded
from raw.githubusercontent.com at the pinned commits.

The oracle is the pip `tflite_micro` interpreter: TFLM's reference kernels with TFLite's
default double rounding (see scripts/tflite-fixtures.py for how that was checked). TFLM with
CMSIS-NN kernels gives the same bytes on these models (checked on the emulated Cortex-M4 with
TFLM's own build). Its arena figure is the x86-64 host's `arena_used_bytes` (head + tail).

Inputs: keyword spotting runs the 1,000 official inputs; the other three run 16 inputs drawn
uniformly from int8 with numpy's PCG64 seeded 0 (they have no int8 test set upstream).
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import tflite_micro
from tflite_micro import runtime as tflm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tflm_run import ARENA, run_tflm  # noqa: E402  (the scripts folder's shared helper)
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "trainer" / "tests" / "fixtures" / "mlperf"
N_SEEDED = 16

TINY = ("mlcommons/tiny", "1afd2c9820f795965a6134facd0b4dfae41ef23f")
RUNNER = ("eembc/energyrunner", "cf7c2f2634608a7c0ea7458ab7cb3379f2863424")

# name, task, upstream path, sha256 prefix (as measured when the fixtures were first made)
MODELS = [
    ("ad01_int8", "anomaly detection (FC autoencoder, ToyADMOS car)",
     "benchmark/training/anomaly_detection/trained_models/ad01_int8.tflite", "87cf24194ef9"),
    ("kws_ref_model", "keyword spotting (DS-CNN, Speech Commands v2)",
     "benchmark/training/keyword_spotting/trained_models/kws_ref_model.tflite", "aeea43680070"),
    ("pretrainedResnet_quant", "image classification (ResNet-8, CIFAR-10)",
     "benchmark/training/image_classification/trained_models/pretrainedResnet_quant.tflite",
     "3c002613d1b2"),
    ("vww_96_int8", "visual wake words (MobileNetV1 0.25, COCO person)",
     "benchmark/training/visual_wake_words/trained_models/vww_96_int8.tflite", "597a384c8c2c"),
]


def fetch(repo, commit, path, git_dir):
    if git_dir:
        return subprocess.run(["git", f"--git-dir={git_dir}", "show", f"{commit}:{path}"],
                              check=True, capture_output=True).stdout
    url = f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read()


def op_names(tfl):
    """The builtin operators of the graph, in order."""
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    m = fb.ModelT.InitFromPackedBuf(tfl, 0)
    codes = [max(c.deprecatedBuiltinCode, c.builtinCode) for c in m.operatorCodes]
    return [names[codes[op.opcodeIndex]] for op in m.subgraphs[0].operators]


def kws_inputs(git_dir):
    """The runner's 1,000 keyword-spotting inputs in y_labels.csv order, and their labels."""
    repo, commit = RUNNER
    csv = fetch(repo, commit, "datasets/kws01/y_labels.csv", git_dir).decode()
    xs, labels = [], []
    for line in csv.splitlines():
        if not line.strip():
            continue
        name, classes, label = line.split(",")
        assert classes == "12", line
        raw = fetch(repo, commit, f"datasets/kws01/{name}", git_dir)
        assert len(raw) == 490, (name, len(raw))
        xs.append(np.frombuffer(raw, dtype=np.int8).reshape(49, 10, 1))
        labels.append(int(label))
    return np.stack(xs), np.array(labels, dtype=np.uint8)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", help="git directory of mlcommons/tiny (else download)")
    ap.add_argument("--energyrunner", help="git directory of eembc/energyrunner (else download)")
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for name, task, path, sha in MODELS:
        tfl = fetch(*TINY, path, a.tiny)
        digest = hashlib.sha256(tfl).hexdigest()
        assert digest.startswith(sha), (name, digest)
        probe = tflm.Interpreter.from_bytes(tfl, arena_size=ARENA)
        ind, outd = probe.get_input_details(0), probe.get_output_details(0)
        in_shape = [int(s) for s in ind["shape"][1:]]
        out_shape = [int(s) for s in outd["shape"][1:]]
        labels = None
        if name == "kws_ref_model":
            xs, labels = kws_inputs(a.energyrunner)
        else:
            rng = np.random.default_rng(0)
            xs = rng.integers(-128, 128, size=(N_SEEDED, *in_shape), dtype=np.int8)
        ys, arenas = run_tflm(tfl, xs)
        arena = arenas["total"]
        meta = {
            "name": name, "task": task,
            "source": {"repository": f"github.com/{TINY[0]}", "commit": TINY[1], "path": path,
                       "sha256": digest, "licence": "Apache-2.0"},
            "inputs": len(xs), "input_shape": in_shape, "output_shape": out_shape,
            "inputs_source": (
                {"repository": f"github.com/{RUNNER[0]}", "commit": RUNNER[1],
                 "path": "datasets/kws01/*.bin in y_labels.csv order",
                 "licence": "CC-BY-4.0 (Speech Commands v2)"}
                if labels is not None else
                f"{N_SEEDED} uniform int8 inputs, numpy default_rng(0)"),
            "arena_used_bytes": arena,
            "tflite_bytes": len(tfl),
            "ops": op_names(tfl),
            "tflite_micro": tflite_micro.__version__,
        }
        if labels is not None:
            top1 = float((ys.argmax(axis=1) == labels).mean())
            meta["tflm_top1"] = top1
        files = [("tflite", tfl), ("inputs.bin", xs.astype(np.int8).tobytes()),
                 ("tflm.bin", ys.astype(np.int8).tobytes())]
        if labels is not None:
            files.append(("labels.bin", labels.tobytes()))
        files.append(("json", (json.dumps(meta, indent=1) + "\n").encode()))
        for ext, data in files:
            (OUT / f"{name}.{ext}").write_bytes(data)
        extra = f", TFLM top-1 {100 * meta['tflm_top1']:.1f} %" if labels is not None else ""
        print(f"[{name}] {len(tfl)} B, {len(xs)} inputs, arena_used_bytes {arena}{extra}")


if __name__ == "__main__":
    main()
