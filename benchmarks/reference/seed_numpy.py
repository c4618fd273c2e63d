#!/usr/bin/env python3
"""The seed notebook's algorithm in numpy, on the same IDX files MnistNative reads, for side-by-side timing.

Usage: seed_numpy.py DATA_DIR [--iterations 1000] [--train-count 10000] [--hidden 10] [--seed 0] [--json]
                     [--fixtures DIR]

The math is the notebook's (float64, full batch, lr 0.1, ReLU, softmax); only the data loading differs
(IDX files instead of tf.keras). Prints the notebook's log lines, or one JSON object with --json.
With --fixtures DIR it also writes the seed-parity fixtures the tests read: init.npz and final.npz (w1, b1, w2,
b2 in the notebook's orientation), expected.json (the log and the test accuracy) and generated.json (the numpy
version and the command that made them).
"""
import argparse
import json
import struct
import sys
import time

import numpy as np


def read_idx(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    dims = struct.unpack(">" + "I" * (magic & 0xFF), data[4:4 + 4 * (magic & 0xFF)])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def loaded_blas():
    """The BLAS library numpy actually loaded (Debian switches it with update-alternatives)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "blas" in line.lower() and "/" in line}
        return ", ".join(sorted(paths)) or "unknown"
    except OSError:
        return "unknown"


def save_npz(path, **arrays):
    """np.savez with fixed zip timestamps, so regenerating unchanged fixtures leaves git with nothing to commit."""
    import zipfile
    import io
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, array in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(array, dtype=np.float64), allow_pickle=False)
            z.writestr(zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())


def write_fixtures(a, summary, **final):
    import os
    import platform
    save_npz(a.fixtures + "/final.npz", **final)
    expected = {"numpy_seed": a.seed, "precision": "f64", "train_count": summary["train_count"], "hidden": a.hidden,
                "learning_rate": a.lr, "iterations": a.iterations, "log": summary["log"],
                "test_accuracy": summary["test_accuracy"]}
    with open(a.fixtures + "/expected.json", "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    generated = {"script": "benchmarks/reference/seed_numpy.py",
                 "command": "python3 benchmarks/reference/seed_numpy.py " + " ".join(sys.argv[1:]).replace(a.data_dir, "data/mnist"),
                 "numpy": np.__version__, "python": platform.python_version()}
    with open(a.fixtures + "/generated.json", "w") as f:
        json.dump(generated, f, indent=1)
        f.write("\n")
    print(f"seed-parity fixtures written to {os.path.abspath(a.fixtures)}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir")
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--train-count", type=int, default=10000)
    ap.add_argument("--hidden", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--fixtures", metavar="DIR", help="write init.npz, final.npz, expected.json, generated.json here")
    a = ap.parse_args()

    d = a.data_dir.rstrip("/")
    x_train = read_idx(d + "/train-images-idx3-ubyte").reshape(60000, -1).T[:, :a.train_count] / 255.0
    y_train = read_idx(d + "/train-labels-idx1-ubyte")[:a.train_count].astype(np.int32)
    x_test = read_idx(d + "/t10k-images-idx3-ubyte").reshape(10000, -1).T / 255.0
    y_test = read_idx(d + "/t10k-labels-idx1-ubyte").astype(np.int32)

    np.random.seed(a.seed)
    h = a.hidden
    w1 = np.random.randn(h, 784) * np.sqrt(1.0 / 784)
    b1 = np.random.randn(h, 1) * 0.01
    w2 = np.random.randn(10, h) * np.sqrt(1.0 / h)
    b2 = np.random.randn(10, 1) * 0.01
    if a.fixtures:
        save_npz(a.fixtures + "/init.npz", w1=w1, b1=b1, w2=w2, b2=b2)

    def forward(x):
        z1 = w1 @ x + b1
        a1 = np.maximum(z1, 0)
        z2 = w2 @ a1 + b2
        e = np.exp(z2 - z2.max(axis=0, keepdims=True))
        return z1, a1, z2, e / e.sum(axis=0, keepdims=True)

    m = y_train.size
    one_hot = np.zeros((10, m))
    one_hot[y_train, np.arange(m)] = 1
    log = []
    out = sys.stderr if a.json else sys.stdout
    start = time.perf_counter()
    for i in range(a.iterations):
        z1, a1, z2, a2 = forward(x_train)
        dz2 = a2 - one_hot
        dw2 = (1 / m) * dz2 @ a1.T
        db2 = (1 / m) * dz2.sum(axis=1, keepdims=True)
        dz1 = (w2.T @ dz2) * (z1 > 0)
        dw1 = (1 / m) * dz1 @ x_train.T
        db1 = (1 / m) * dz1.sum(axis=1, keepdims=True)
        w1 -= a.lr * dw1
        b1 -= a.lr * db1
        w2 -= a.lr * dw2
        b2 -= a.lr * db2
        if i % 50 == 0:
            acc = float(np.mean(a2.argmax(axis=0) == y_train))
            loss = float(-np.mean(np.log(a2[y_train, np.arange(m)])))
            log.append({"iteration": i, "train_accuracy": acc, "loss": loss})
            print(f"Iteration {i}: Accuracy = {acc:.4f}  Loss = {loss:.6f}", file=out)
    seconds = time.perf_counter() - start
    test_accuracy = float(np.mean(forward(x_test)[3].argmax(axis=0) == y_test))
    summary = {"backend": "numpy", "numpy": np.__version__, "blas": loaded_blas(), "hidden": h, "train_count": m, "iterations": a.iterations,
               "log": log, "test_accuracy": test_accuracy, "train_seconds": seconds,
               "ms_per_iteration": 1000 * seconds / max(1, a.iterations)}
    if a.fixtures:
        write_fixtures(a, summary, w1=w1, b1=b1, w2=w2, b2=b2)
    if a.json:
        print(json.dumps(summary))
    else:
        print(f"Test accuracy = {test_accuracy:.4f}")
        print(f"Trained in {seconds:.3f} s ({summary['ms_per_iteration']:.3f} ms per iteration); numpy {np.__version__}, BLAS {summary['blas']}")


if __name__ == "__main__":
    main()
