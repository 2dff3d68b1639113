#!/usr/bin/env python3
"""Generate the committed `.tflite` importer test fixtures.

Needs:  pip install tensorflow-cpu tflite-micro     (developed with TF 2.21 / Keras 3)
Run:    python3 scripts/tflite-fixtures.py          (from the repo root)

Builds four small Keras CNNs (ref-cnn trained on data/mnist10k, the others
random-init), converts each to a fully-int8 .tflite with the TFLite converter,
runs TensorFlow Lite Micro's own Python interpreter (`tflite_micro`) on N=16
int8 inputs and writes, per model NAME, into trainer/tests/fixtures/tflite/:
  NAME.tflite      converted model
  NAME.inputs.bin  N int8 inputs, NHWC batch 1 each, concatenated raw bytes
  NAME.tflm.bin    N int8 outputs produced by TFLM, concatenated raw bytes
  NAME.json        shapes, I/O quantization, op list + per-op details, versions
The Rust tests only read these committed outputs; neither TensorFlow nor this
script is needed to run them. Seeds are fixed (numpy, tf, keras: seed 0).
Model notes: inputs have a static batch of 1 (a dynamic batch turns Flatten
into SHAPE, STRIDED_SLICE, PACK, RESHAPE); mobilenet pads ((1,1),(1,1)) before
its valid stride-2 depthwise conv, because ((0,1),(0,1)) is folded by the
converter into DEPTHWISE_CONV_2D(padding=SAME) and no PAD op remains; the
random-init models get U(-0.1,0.1) biases and a data-dependent rescale
(normalize_init) so that int8 outputs differ between inputs.

Findings about the pip `tflite_micro` build (checked against the TFLM sources
at tensorflow/tflite-micro 90b983c, python/tflite_micro/BUILD + pypi_build.sh,
and the installed _runtime.so):
* Requantization uses TFLite's default DOUBLE rounding:
  MultiplyByQuantizedMultiplier = RoundingDivideByPOT(
  SaturatingRoundingDoublingHighMul(x << left_shift, multiplier), right_shift).
  `TFLITE_SINGLE_ROUNDING` is only tested with `#if` in
  tensorflow/lite/kernels/internal/{common.h,common.cc,quantization_util.cc};
  nothing in the repo (BUILD, .bzl, .bazelrc, Makefiles) defines it, and the
  wheel is built with plain `bazel build //python/tflite_micro:whl.dist
  --compilation_mode=opt --//:with_compression=true`, so it evaluates to 0.
* Kernels are the portable REFERENCE kernels: _runtime links
  //tensorflow/lite/micro/kernels:micro_ops, whose only optimized variants
  (select()) are Xtensa; the Bazel build has no CMSIS-NN option at all and
  _runtime.so contains no arm_* / CMSIS symbols.
* Confirmed empirically: "tflite_ref_mismatches" in each json counts output
  bytes where tf.lite.Interpreter (TF 2.21, BUILTIN_REF kernels) disagrees
  with TFLM. The few +-1 differences are in per-channel FULLY_CONNECTED at
  exact .5 ties on negative accumulators: recomputing them by hand, TFLM
  matches double rounding (ties away from zero), tf.lite matches single
  rounding (ties toward +inf). So do not use tf.lite as the oracle.
* The Python API has no arena_used_bytes(); the value is taken from
  print_allocations() ("[RecordingMicroAllocator] Arena allocation total N
  bytes" = head + tail = MicroInterpreter::arena_used_bytes()), captured
  from the C-level stderr.
"""
import gzip
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # bit-stable float math

import numpy as np
import tensorflow as tf
import keras
from keras import layers
import tflite_micro
from tflite_micro import runtime as tflm
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tflm_run import run_tflm  # noqa: E402  (the scripts folder's shared helper)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "trainer" / "tests" / "fixtures" / "tflite"
N = 16
N_REP = 200
ARENA = 4 << 20
MOBILENET_PAD = ((1, 1), (1, 1))

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.experimental.enable_op_determinism()


# ---------------------------------------------------------------- data
def read_idx(name):
    raw = gzip.open(ROOT / "data" / "mnist10k" / name, "rb").read()
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(dims)


def mnist():
    x = read_idx("images-idx3-ubyte.gz").astype(np.float32)[..., None] / 255.0
    y = read_idx("labels-idx1-ubyte.gz").astype(np.int64)
    return (x[:8000], y[:8000]), (x[8000:10000], y[8000:10000])


def noise_images(n, shape, rng):
    """Smoothed uniform noise in [0,1]: 3x3 box blur of U(0,1), contrast-stretched,
    then a random per-image (per-channel) gain and offset so that global pooling
    does not average every image down to the same features."""
    h, w, c = shape
    x = rng.uniform(0, 1, (n, h + 2, w + 2, c)).astype(np.float32)
    s = sum(x[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0
    lo, hi = s.min(axis=(1, 2), keepdims=True), s.max(axis=(1, 2), keepdims=True)
    gain = rng.uniform(0.2, 1.0, (n, 1, 1, c))
    off = rng.uniform(0, 1, (n, 1, 1, c)) * (1 - gain)
    return ((s - lo) / (hi - lo) * gain + off).astype(np.float32)


# ---------------------------------------------------------------- models
BIAS = keras.initializers.RandomUniform(-0.1, 0.1, seed=1)  # non-zero biases for random-init


conv = lambda f, k, act=None, **kw: layers.Conv2D(
    f, k, activation=act, use_bias=True, bias_initializer=BIAS, **kw)
dw = lambda k, **kw: layers.DepthwiseConv2D(k, use_bias=True, bias_initializer=BIAS, **kw)
# batch_size=1: with a dynamic batch the converter lowers Flatten to
# SHAPE, STRIDED_SLICE, PACK, RESHAPE; with a static batch it is a single RESHAPE.
inp = lambda shape: keras.Input(shape, batch_size=1)


def ref_cnn():
    x = i = inp((28, 28, 1))
    for f in (8, 16):
        x = layers.BatchNormalization()(layers.Conv2D(f, 3, padding="same", use_bias=True)(x))
        x = layers.MaxPool2D(2)(layers.ReLU()(x))
    x = layers.Flatten()(x)
    return keras.Model(i, layers.Dense(10)(x), name="ref_cnn")


def mobilenet():
    r6 = lambda: layers.ReLU(6.0)
    i = inp((96, 96, 1))
    x = r6()(conv(8, 3, strides=2, padding="same")(i))
    x = r6()(dw(3, padding="same")(x))
    x = r6()(conv(16, 1)(x))
    x = r6()(dw(3, strides=2, padding="same")(x))
    x = r6()(conv(32, 1)(x))
    # ((0,1),(0,1)) + 3x3/2 'valid' equals 'same' padding here, and the converter
    # folds that PAD into DEPTHWISE_CONV_2D(padding=SAME); ((1,1),(1,1)) keeps a PAD op.
    x = layers.ZeroPadding2D(MOBILENET_PAD)(x)
    x = r6()(dw(3, strides=2, padding="valid")(x))
    x = r6()(conv(32, 1)(x))
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(10, bias_initializer=BIAS)(x)
    return keras.Model(i, layers.Softmax()(x), name="mobilenet")


def residual():
    i = inp((32, 32, 3))
    x = conv(16, 3, "relu", padding="same")(i)
    y = conv(16, 3, "relu", padding="same")(x)
    y = conv(16, 3, padding="same")(y)
    x = layers.ReLU()(layers.Add()([y, x]))
    x = layers.MaxPool2D(2)(x)
    x = conv(16, 3, "relu", padding="same")(x)
    x = layers.AveragePooling2D(2)(x)
    x = layers.Flatten()(x)
    return keras.Model(i, layers.Dense(10, bias_initializer=BIAS)(x), name="residual")


def concat():
    i = inp((32, 32, 3))
    x = conv(16, 3, "relu", padding="same")(i)
    a = conv(8, 1, "relu")(x)
    b = conv(8, 3, "relu", padding="same")(x)
    c = conv(8, 1, "relu")(layers.MaxPool2D(3, strides=1, padding="same")(x))
    x = layers.Concatenate(axis=-1)([a, b, c])
    x = layers.MaxPool2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(i, layers.Dense(10, bias_initializer=BIAS)(x), name="concat")


def normalize_init(model, x, target=2.0, logits=2.0):
    """Data-dependent init for random models: in graph order rescale each layer's
    kernel and bias so its output has std ~target over x. Keras' default init
    shrinks activations layer by layer until the biases dominate and every
    input gives the same int8 output. The last Dense is instead centred and
    scaled so that its outputs vary by ~logits (std) *across images*."""
    ws = [l for l in model.layers
          if isinstance(l, (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense))]
    for l in ws:
        z = keras.Model(model.inputs, l.output).predict(x, verbose=0)
        if l is not ws[-1]:
            for v in l.weights:
                v.assign(v * (target / float(np.std(z))))
            continue
        z = z - l.bias.numpy()
        k = logits / float(np.mean(np.std(z, axis=0)))
        l.kernel.assign(l.kernel * k)
        l.bias.assign(l.bias * k - np.mean(z, axis=0) * k)


# ---------------------------------------------------------------- conversion
def convert(model, rep):
    c = tf.lite.TFLiteConverter.from_keras_model(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = lambda: ([rep[k:k + 1]] for k in range(len(rep)))
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    c.inference_input_type = tf.int8
    c.inference_output_type = tf.int8
    return c.convert()


def quantize_input(x, scale, zp):
    """TFLite's AffineQuantize: float32 x/scale, std::round (half away from 0), +zp, clamp."""
    v = x.astype(np.float32) / np.float32(scale)
    v = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))
    return np.clip(v.astype(np.int64) + zp, -128, 127).astype(np.int8)


ENUMS = {k: {v: n for n, v in vars(getattr(fb, k)).items() if not n.startswith("_")}
         for k in ("BuiltinOperator", "Padding", "ActivationFunctionType", "TensorType")}
OPT_ENUM = {"padding": "Padding", "fusedActivationFunction": "ActivationFunctionType"}


def describe(tfl):
    """Op names in graph order plus per-op options and tensor quantization."""
    m = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(tfl, 0))
    g = m.subgraphs[0]

    def tensor(ix):
        ix = int(ix)
        if ix < 0:  # optional input absent
            return None
        t, q = g.tensors[ix], g.tensors[ix].quantization
        d = {"index": ix, "name": t.name.decode() if isinstance(t.name, bytes) else t.name,
             "shape": [int(s) for s in t.shape], "type": ENUMS["TensorType"][t.type],
             "const": m.buffers[t.buffer].data is not None}
        if q is not None and q.scale is not None and len(q.scale):
            d["scale"] = [float(s) for s in q.scale]
            d["zero_point"] = [int(z) for z in q.zeroPoint]
            if len(q.scale) > 1:
                d["quantized_dimension"] = int(q.quantizedDimension)
        return d

    names, detail = [], []
    for op in g.operators:
        name = ENUMS["BuiltinOperator"][tflm.get_builtin_code_from_operator_code(
            m.operatorCodes[op.opcodeIndex])]
        opts = {}
        for k, v in (vars(op.builtinOptions) if op.builtinOptions else {}).items():
            v = v.item() if isinstance(v, np.generic) else v
            opts[k] = ENUMS[OPT_ENUM[k]][v] if k in OPT_ENUM else (
                v if isinstance(v, (bool, int, float)) else repr(v))
        names.append(name)
        detail.append({"op": name, "options": opts,
                       "inputs": [tensor(i) for i in op.inputs],
                       "outputs": [tensor(i) for i in op.outputs]})
    return names, detail


def run_tflite_ref(tfl, xs_q):
    """Cross-check with tf.lite.Interpreter using its reference kernels."""
    ref = tf.lite.experimental.OpResolverType.BUILTIN_REF
    ip = tf.lite.Interpreter(model_content=tfl, experimental_op_resolver_type=ref)
    ip.allocate_tensors()
    i, o = ip.get_input_details()[0]["index"], ip.get_output_details()[0]["index"]
    def run(x):
        ip.set_tensor(i, x[None])
        ip.invoke()
        return ip.get_tensor(o).reshape(-1).copy()
    return np.stack([run(x) for x in xs_q])


def emit(name, model, rep, test_x, extra=None):
    tfl = convert(model, rep)
    probe = tflm.Interpreter.from_bytes(tfl, arena_size=ARENA)
    ind, outd = probe.get_input_details(0), probe.get_output_details(0)
    in_scale = float(ind["quantization_parameters"]["scales"][0])
    in_zp = int(ind["quantization_parameters"]["zero_points"][0])
    xs_q = quantize_input(test_x[:N], in_scale, in_zp)
    ys, arena = run_tflm(tfl, xs_q)
    ref = run_tflite_ref(tfl, xs_q)
    ops, detail = describe(tfl)
    in_shape = [int(s) for s in ind["shape"][1:]]
    out_shape = [int(s) for s in outd["shape"][1:]]
    assert xs_q.shape == (N, *in_shape) and ys.shape == (N, int(np.prod(out_shape)))
    meta = {
        "name": name, "inputs": N, "input_shape": in_shape, "output_shape": out_shape,
        "input_scale": in_scale, "input_zero_point": in_zp,
        "output_scale": float(outd["quantization_parameters"]["scales"][0]),
        "output_zero_point": int(outd["quantization_parameters"]["zero_points"][0]),
        "arena_used_bytes": arena["total"],
        "arena_head_bytes": arena["head"], "arena_tail_bytes": arena["tail"],
        "tflite_bytes": len(tfl), "ops": ops,
        "tflite_ref_mismatches": int((ref.astype(np.int16) != ys).sum()),
        "tensorflow": tf.__version__, "tflite_micro": tflite_micro.__version__,
    }
    meta.update(extra(tfl, in_scale, in_zp) if extra else {})
    meta["ops_detail"] = detail
    OUT.mkdir(parents=True, exist_ok=True)
    for ext, data in (("tflite", tfl), ("inputs.bin", xs_q.tobytes()),
                      ("tflm.bin", ys.astype(np.int8).tobytes()),
                      ("json", (json.dumps(meta, indent=1) + "\n").encode())):
        (OUT / f"{name}.{ext}").write_bytes(data)
    rows = len(np.unique(ys, axis=0))
    print(f"[{name}] ops={ops}\n[{name}] {len(tfl)} B tflite, arena_used_bytes="
          f"{arena['total']}, out min/max={ys.min()}/{ys.max()}, distinct values="
          f"{len(np.unique(ys))}, distinct output rows={rows}/{N}, saturated(-128/127)="
          f"{(ys == -128).mean():.2f}/{(ys == 127).mean():.2f}, "
          f"tf.lite BUILTIN_REF mismatches={meta['tflite_ref_mismatches']}")
    if rows < N // 2 or len(np.unique(ys)) < 4:
        print(f"[{name}] WARNING: degenerate outputs", file=sys.stderr)


def main():
    # 1. ref-cnn: trained 2 epochs on MNIST.
    keras.utils.set_random_seed(0)  # seeds python, numpy and tf
    (xtr, ytr), (xte, yte) = mnist()
    m = ref_cnn()
    m.compile(optimizer="adam", metrics=["accuracy"],
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    m.fit(xtr, ytr, epochs=2, batch_size=32, shuffle=True, verbose=2)
    float_acc = float(m.evaluate(xte, yte, verbose=0)[1])

    def accuracy(tfl, scale, zp):
        ys, _ = run_tflm(tfl, quantize_input(xte, scale, zp))
        acc = float((ys.argmax(axis=1) == yte).mean())
        print(f"[ref-cnn] float accuracy {float_acc:.4f}, int8 TFLM accuracy {acc:.4f}")
        return {"int8_accuracy": acc, "int8_accuracy_by": "tflite_micro (2000 test images)",
                "float_accuracy": float_acc}

    emit("ref-cnn", m, xtr[:N_REP], xte, accuracy)

    # 2-4. random-init models on smoothed-noise images.
    for name, build, shape in (("mobilenet", mobilenet, (96, 96, 1)),
                               ("residual", residual, (32, 32, 3)),
                               ("concat", concat, (32, 32, 3))):
        keras.utils.set_random_seed(0)
        model = build()
        data = noise_images(N_REP + N, shape, np.random.default_rng(0))
        normalize_init(model, data[:N_REP])
        emit(name, model, data[:N_REP], data[N_REP:])

    for name in ("ref-cnn", "mobilenet", "residual", "concat"):  # size consistency
        j = json.loads((OUT / f"{name}.json").read_text())
        assert (OUT / f"{name}.inputs.bin").stat().st_size == N * np.prod(j["input_shape"])
        assert (OUT / f"{name}.tflm.bin").stat().st_size == N * np.prod(j["output_shape"])
        assert (OUT / f"{name}.tflite").stat().st_size == j["tflite_bytes"]
    for f in sorted(OUT.iterdir()):
        print(f"{f.relative_to(ROOT)}  {f.stat().st_size}")


if __name__ == "__main__":
    main()
