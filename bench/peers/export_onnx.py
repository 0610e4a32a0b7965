"""Exports the ONNX models onnxruntime-node needs for `npm run bench:compare`, from torch and
torchvision, into a cache folder (bench/.cache/onnx, gitignored). Files already there are kept,
so only the first run pays for the export.

Input, on stdin (or as the first argument):
  {"dir": "...", "convs": [{"file", "n", "c", "h", "w", "oc", "kh", "kw", "stride", "padding",
   "dilation", "groups"}], "models": [{"file", "model"}]}
  convs: one model holding a single bias-free Conv2d, fixed input [n, c, h, w] (padding is
         [top, bottom, left, right] and must be symmetric).
  models: a torchvision model (alexnet, vgg16, googlenet, resnet50, densenet121) in eval mode with
          a dynamic batch axis, input "input" [N, 3, 224, 224].
Output: {"written": [...], "cached": [...], "failed": [{"file", "error"}]} on stdout.

Random weights: the benchmark measures speed, and weights do not change the work done.
"""
import json
import os
import sys
import time

import torch

OPSET = 13


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def export(module, example, path, dynamic_batch):
    module.eval()
    tmp = path + ".tmp"
    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
    with torch.no_grad():
        torch.onnx.export(
            module,
            example,
            tmp,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
        )
    os.replace(tmp, path)  # a killed export never leaves a truncated model behind


def conv_module(spec):
    top, bottom, left, right = spec["padding"]
    if top != bottom or left != right:
        raise ValueError("asymmetric padding is not supported")
    groups = spec.get("groups", 1)
    conv = torch.nn.Conv2d(
        spec["c"],
        spec["oc"],
        (spec["kh"], spec["kw"]),
        stride=tuple(spec["stride"]),
        padding=(top, left),
        dilation=tuple(spec["dilation"]),
        groups=groups,
        bias=False,
    )
    return conv, torch.randn(spec["n"], spec["c"], spec["h"], spec["w"])


def zoo_module(name):
    import torchvision.models as tvm

    if name == "googlenet":
        model = tvm.googlenet(aux_logits=False, init_weights=True, transform_input=False)
    else:
        model = getattr(tvm, name)()
    return model, torch.randn(1, 3, 224, 224)


def main():
    raw = sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read()
    spec = json.loads(raw)
    folder = spec["dir"]
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(int(spec.get("threads", 2)))
    done = {"written": [], "cached": [], "failed": []}
    work = [(c["file"], lambda c=c: conv_module(c), False) for c in spec.get("convs", [])]
    work += [(m["file"], lambda m=m: zoo_module(m["model"]), True) for m in spec.get("models", [])]
    for file, make, dynamic in work:
        path = os.path.join(folder, file)
        if os.path.exists(path):
            done["cached"].append(file)
            continue
        t0 = time.perf_counter()
        try:
            module, example = make()
            export(module, example, path, dynamic)
            done["written"].append(file)
            log(f"onnx: wrote {file} in {time.perf_counter() - t0:.1f}s")
        except Exception as e:  # one failed export only loses that row
            done["failed"].append({"file": file, "error": f"{type(e).__name__}: {e}"})
            log(f"onnx: FAILED {file}: {e}")
    print(json.dumps(done))


if __name__ == "__main__":
    main()
