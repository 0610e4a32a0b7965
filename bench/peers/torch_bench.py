"""PyTorch side of `npm run bench:compare`: times the jobs the driver (bench/compare.ts) sends and
prints the results as one JSON object on stdout (progress goes to stderr).

Input, on stdin (or as the first argument): {"threads": N, "timing": {...}, "jobs": [...]}, where
timing is {"warmup", "warmupSeconds"?, "minReps", "maxReps", "minSeconds", "slowSeconds"?} and each job has an "id" and a "kind":
  conv     n c h w oc kh kw stride[2] padding[4] dilation[2] groups passes[fwd|bwdData|bwdWeight]
  gemm     n                    (square torch.mm, which is OpenBLAS in Debian's build)
  maxpool  shape kernel stride padding [indices: also return the argmax]
  avgpool  shape                (global average pooling)
  bnTrain / bnEval  shape
  infer    model batch          (torchvision model, eval() + no_grad)
  train    model batch          (one forward + backward + SGD step; model resnet18 or mnistnet)
Output: {"torch": version, "threads": N, "results": [{"id", ...seconds}], "maxRssKb": ...}.

With --stream, the process stays up and answers one job at a time, so the driver can interleave
PyTorch with ferroconv shape by shape (on a shared machine, load drifts between two long
sequential runs): the first stdin line is {"threads", "timing"}, then one job per line, each
answered by one JSON result line on stdout; EOF ends it.

Run it with Debian's /usr/bin/python3 (python3-torch, python3-torchvision). The driver also sets
OMP_NUM_THREADS / MKL_NUM_THREADS / OPENBLAS_NUM_THREADS so every pool matches `threads`.
"""
import json
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def time_it(fn, timing):
    """Median (and all) wall times of fn() after warm-up, adaptive in the number of repetitions."""
    # Untimed calls: `warmup` of them, then more until they add up to warmupSeconds (the
    # driver's timeIt does the same).
    warmed = 0.0
    i = 0
    while i < timing.get("warmup", 1) or warmed < timing.get("warmupSeconds", 0):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        warmed += dt
        slow = timing.get("slowSeconds")
        if i == 0 and slow is not None and dt >= slow:
            return {"median": dt, "min": dt, "reps": 1}  # far off the pace: one call says enough
        i += 1
    times = []
    spent = 0.0
    while True:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
        if len(times) >= timing["maxReps"]:
            break
        if len(times) >= timing["minReps"] and spent >= timing["minSeconds"]:
            break
    return {"median": statistics.median(times), "min": min(times), "reps": len(times)}


def symmetric_padding(pad):
    top, bottom, left, right = pad
    if top != bottom or left != right:
        return None
    return (top, left)


def conv_job(job, timing):
    n, c, h, w = job["n"], job["c"], job["h"], job["w"]
    groups = job.get("groups", 1)
    x = torch.randn(n, c, h, w)
    weight = torch.randn(job["oc"], c // groups, job["kh"], job["kw"]) * 0.05
    stride = tuple(job["stride"])
    dilation = tuple(job["dilation"])
    padding = symmetric_padding(job["padding"])
    if padding is None:
        # Only symmetric padding maps onto conv2d's own padding; the zoo uses nothing else.
        return {"error": "asymmetric padding not supported by this harness"}
    out = {}
    with torch.no_grad():
        y = F.conv2d(x, weight, None, stride, padding, dilation, groups)
    gy = torch.randn_like(y)
    passes = job.get("passes", ["fwd", "bwdData", "bwdWeight"])
    if "fwd" in passes:
        with torch.no_grad():
            out["fwd"] = time_it(lambda: F.conv2d(x, weight, None, stride, padding, dilation, groups), timing)
    # aten::convolution_backward is what autograd calls for a conv: the same (oneDNN or native)
    # kernels training uses, asked for one gradient at a time.
    def backward(mask):
        return torch.ops.aten.convolution_backward(
            gy, x, weight, None, list(stride), list(padding), list(dilation), False, [0, 0], groups, mask
        )

    with torch.no_grad():
        if "bwdData" in passes:
            out["bwdData"] = time_it(lambda: backward([True, False, False]), timing)
        if "bwdWeight" in passes:
            out["bwdWeight"] = time_it(lambda: backward([False, True, False]), timing)
    return out


def gemm_job(job, timing):
    n = job["n"]
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    c = torch.empty(n, n)
    return {"mm": time_it(lambda: torch.mm(a, b, out=c), timing)}


def memory_job(job, timing):
    x = torch.randn(*job["shape"])
    kind = job["kind"]
    with torch.no_grad():
        if kind == "maxpool":
            # With indices: what a training forward needs (torch writes them as int64).
            idx = bool(job.get("indices", False))
            fn = lambda: F.max_pool2d(x, job["kernel"], job["stride"], job["padding"], return_indices=idx)  # noqa: E731
        elif kind == "avgpool":
            fn = lambda: F.adaptive_avg_pool2d(x, 1)  # noqa: E731
        else:
            ch = x.shape[1]
            mean, var = torch.zeros(ch), torch.ones(ch)
            weight, bias = torch.ones(ch), torch.zeros(ch)
            training = kind == "bnTrain"
            fn = lambda: F.batch_norm(x, mean, var, weight, bias, training, 0.1, 1e-5)  # noqa: E731
        return {"fwd": time_it(fn, timing)}


class MnistNet(torch.nn.Module):
    """The twin of ferroconv's models.mnistNet(): three conv-BN-ReLU-maxpool blocks + Linear."""

    def __init__(self):
        super().__init__()
        layers = []
        for cin, cout in [(1, 16), (16, 32), (32, 64)]:
            layers += [
                torch.nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                torch.nn.BatchNorm2d(cout),
                torch.nn.ReLU(),
                torch.nn.MaxPool2d(2),
            ]
        layers += [torch.nn.Flatten(), torch.nn.Dropout(0.1), torch.nn.Linear(64 * 3 * 3, 10)]
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def build_model(name):
    if name == "mnistnet":
        return MnistNet(), (1, 28, 28)
    import torchvision.models as tvm

    if name == "googlenet":
        # Same tree as ferroconv's googlenet(): no auxiliary heads, no input transform.
        return tvm.googlenet(aux_logits=False, init_weights=True, transform_input=False), (3, 224, 224)
    return getattr(tvm, name)(), (3, 224, 224)


def infer_job(job, timing):
    t0 = time.perf_counter()
    model, chw = build_model(job["model"])
    model.eval()
    x = torch.randn(job["batch"], *chw)
    setup = time.perf_counter() - t0
    with torch.no_grad():
        stat = time_it(lambda: model(x), timing)
    return {"step": stat, "setupSeconds": setup}


def train_job(job, timing):
    t0 = time.perf_counter()
    model, chw = build_model(job["model"])
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(job["batch"], *chw)
    target = torch.randint(0, 10, (job["batch"],))
    setup = time.perf_counter() - t0

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), target)
        loss.backward()
        opt.step()

    return {"step": time_it(step, timing), "setupSeconds": setup}


RUNNERS = {
    "conv": conv_job,
    "gemm": gemm_job,
    "maxpool": memory_job,
    "avgpool": memory_job,
    "bnTrain": memory_job,
    "bnEval": memory_job,
    "infer": infer_job,
    "train": train_job,
}


def setup(spec):
    torch.set_num_threads(int(spec.get("threads", 2)))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # only settable before any parallel work; a fresh process always can
    torch.manual_seed(0)


def run_job(job, timing):
    runner = RUNNERS.get(job.get("kind"))
    try:
        if runner is None:
            raise ValueError(f"unknown job kind {job.get('kind')!r}")
        res = runner(job, timing)
    except Exception as e:  # one bad job must not lose the others' numbers
        res = {"error": f"{type(e).__name__}: {e}"}
    res["id"] = job.get("id")
    log(f"torch {res['id']}: {json.dumps({k: v for k, v in res.items() if k != 'id'})}")
    return res


def peak_rss_kb():
    # getrusage's maxrss survives fork + exec on Linux (it would report at least the driver's
    # resident size at spawn); VmHWM is this process's own high-water mark.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def summary(results):
    with open("/proc/self/maps") as maps:
        blas = "openblas" if "openblas" in maps.read() else "unknown"
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "blas": blas,
        "results": results,
        "maxRssKb": peak_rss_kb(),
    }


def main():
    if "--stream" in sys.argv[1:]:
        header = json.loads(sys.stdin.readline())
        setup(header)
        print(json.dumps(summary([])), flush=True)
        for line in sys.stdin:
            if line.strip():
                print(json.dumps(run_job(json.loads(line), header["timing"])), flush=True)
        return
    raw = sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read()
    spec = json.loads(raw)
    setup(spec)
    results = [run_job(job, spec["timing"]) for job in spec["jobs"]]
    print(json.dumps(summary(results)))


if __name__ == "__main__":
    main()
