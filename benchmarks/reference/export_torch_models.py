#!/usr/bin/env python3
"""Trains small MNIST MLPs with PyTorch and exports them with torch.onnx.export: the test fixtures of the ONNX import.

Usage: export_torch_models.py [--data data/mnist] [--out tests/fixtures/onnx] [--epochs 2]

Needs Debian's python3-torch (1.13) and python3-numpy:
    apt-get -o DPkg::Lock::Timeout=900 install -y python3-torch python3-numpy
    /usr/bin/python3 benchmarks/reference/export_torch_models.py

Reads the IDX files (as MnistNative does), scales pixels by 1/255 (float32, as the core does for bytes),
trains each net briefly with Adam, exports it, and measures with PyTorch itself, on the 10,000 test images,
the accuracy and the predicted labels (their SHA-256 over one byte per image). Writes manifest.json beside the
.onnx files: per model its shape, opset, input shape, what the export exercises, and those figures; plus the
torch and numpy versions and the command line. The nets:

  mlp_784_128_10_gemm.onnx       784-128-10, opset 13, fixed batch 1: Gemm (transB=1) + Relu + Gemm
  mlp_784_128_64_10_norm.onnx    784-128-64-10, (x - 0.1307) / 0.3081 in the graph, LogSoftmax, opset 13, dynamic batch
  mlp_784_64_10_dynamic.onnx     784-64-10, dynamic batch axis, Softmax, opset 17
  mlp_784_48_10_opset9.onnx      784-48-10, opset 9, Softmax
  mlp_784_32_10_nchw.onnx        input (N, 1, 28, 28) + nn.Flatten, 784-32-10, opset 11, dynamic batch
  mlp_784_384_128_10.onnx        784-384-128-10 (the --preset fast98 shape), opset 13, dynamic batch: the deep benchmark model
"""
import argparse
import datetime
import hashlib
import json
import os
import sys

import numpy as np
import torch
from torch import nn

from seed_numpy import read_idx  # the IDX reader of the seed's numpy script, beside this one


def load(data_dir, prefix):
    images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte")).reshape(-1, 784)
    labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte"))
    # the core scales bytes by multiplying with the float32 1/255; do the same so both see the same floats
    x = images.astype(np.float32) * np.float32(1.0 / 255.0)
    return torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))


class Normalised(nn.Module):
    """An MLP with the usual MNIST normalisation inside forward (exported as Sub and Div by constants)."""

    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body((x - 0.1307) / 0.3081)


def mlp(sizes, flatten=False):
    layers = [nn.Flatten()] if flatten else []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def train(model, x, y, epochs, nchw, seed):
    """Adam, batches of 128, cross-entropy on the scores (before any exported Softmax / LogSoftmax)."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0])
        for start in range(0, x.shape[0], 128):
            batch = order[start:start + 128]
            xb = x[batch].reshape(-1, 1, 28, 28) if nchw else x[batch]
            loss = loss_fn(model(xb), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/mnist")
    ap.add_argument("--out", default="tests/fixtures/onnx")
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    os.makedirs(args.out, exist_ok=True)
    x_train, y_train = load(args.data, "train")
    x_test, y_test = load(args.data, "t10k")

    specs = [
        dict(file="mlp_784_128_10_gemm.onnx", sizes=[784, 128, 10], opset=13, dynamic=False, final=None,
             normalise=False, nchw=False, exercises="Gemm transB=1 + Relu, fixed batch of 1, no softmax"),
        dict(file="mlp_784_128_64_10_norm.onnx", sizes=[784, 128, 64, 10], opset=13, dynamic=True, final="logsoftmax",
             normalise=True, nchw=False, exercises="(x - 0.1307) / 0.3081 in the graph (Sub, Div), 3 layers, LogSoftmax"),
        dict(file="mlp_784_64_10_dynamic.onnx", sizes=[784, 64, 10], opset=17, dynamic=True, final="softmax",
             normalise=False, nchw=False, exercises="dynamic batch axis, Softmax, opset 17"),
        dict(file="mlp_784_48_10_opset9.onnx", sizes=[784, 48, 10], opset=9, dynamic=True, final="softmax",
             normalise=False, nchw=False, exercises="opset 9"),
        dict(file="mlp_784_32_10_nchw.onnx", sizes=[784, 32, 10], opset=11, dynamic=True, final=None,
             normalise=False, nchw=True, exercises="input (N, 1, 28, 28) + nn.Flatten, opset 11"),
        dict(file="mlp_784_384_128_10.onnx", sizes=[784, 384, 128, 10], opset=13, dynamic=True, final=None,
             normalise=False, nchw=False, exercises="the --preset fast98 shape: the deep-model benchmark"),
    ]
    models = []
    for i, spec in enumerate(specs):
        torch.manual_seed(1000 + i)
        scores = mlp(spec["sizes"], flatten=spec["nchw"])
        if spec["normalise"]:
            scores = Normalised(scores)
        train(scores, x_train, y_train, args.epochs, spec["nchw"], seed=2000 + i)
        finals = {None: [], "softmax": [nn.Softmax(dim=1)], "logsoftmax": [nn.LogSoftmax(dim=1)]}
        model = nn.Sequential(scores, *finals[spec["final"]])
        model.eval()
        with torch.no_grad():
            xt = x_test.reshape(-1, 1, 28, 28) if spec["nchw"] else x_test
            predictions = model(xt).argmax(dim=1).numpy().astype(np.uint8)
        correct = int((predictions == y_test.numpy()).sum())
        dummy = torch.zeros(1, 1, 28, 28) if spec["nchw"] else torch.zeros(1, 784)
        path = os.path.join(args.out, spec["file"])
        tmp = path + ".tmp"
        torch.onnx.export(model, dummy, tmp, opset_version=spec["opset"], input_names=["pixels"], output_names=["scores"],
                          dynamic_axes={"pixels": {0: "batch"}, "scores": {0: "batch"}} if spec["dynamic"] else None,
                          do_constant_folding=True)
        os.replace(tmp, path)
        entry = dict(file=spec["file"], sizes=spec["sizes"], opset=spec["opset"], dynamic_batch=spec["dynamic"],
                     input_shape=["batch" if spec["dynamic"] else 1] + ([1, 28, 28] if spec["nchw"] else [784]),
                     final=spec["final"] or "none", in_graph_normalisation=spec["normalise"], exercises=spec["exercises"],
                     pytorch_test_correct=correct, pytorch_test_accuracy=round(correct / len(predictions), 4),
                     pytorch_predictions_sha256=hashlib.sha256(predictions.tobytes()).hexdigest(),
                     bytes=os.path.getsize(path))
        models.append(entry)
        print(f"{spec['file']}: accuracy {correct / len(predictions):.4f} ({correct}/{len(predictions)})", flush=True)

    manifest = dict(
        generated_by="benchmarks/reference/export_torch_models.py",
        command=" ".join([os.path.basename(sys.executable)] + sys.argv),
        date_utc=datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
        torch_version=torch.__version__, numpy_version=np.__version__, python_version=sys.version.split()[0],
        input_scaling="pixels (uint8) * float32(1/255): the core's scaling of byte images",
        predictions_sha256_of="one byte per test image: the predicted class (argmax of the model's output)",
        epochs=args.epochs, models=models)
    tmp = os.path.join(args.out, "manifest.json.tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    os.replace(tmp, os.path.join(args.out, "manifest.json"))


if __name__ == "__main__":
    main()
