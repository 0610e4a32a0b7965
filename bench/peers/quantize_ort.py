"""Quantizes ONNX models to int8 with ONNX Runtime's own tool (onnxruntime.quantization.quantize_static),
for the int8 rows of `npm run bench:compare`: the models ferroconv quantizes itself, quantized the way
an ONNX Runtime user would, following its documentation: the model pre-processed
(onnxruntime.quantization.shape_inference.quant_pre_process: shape inference and graph optimization,
which lets every Conv become a QLinearConv), then QDQ format, uint8 activations, int8 weights per
channel, min-max calibration on a few random batches. Files already there are kept.

Input, on stdin: {"models": [{"src": "float.onnx", "dst": "int8.onnx", "shape": [1, 3, 224, 224]}]}
Output: {"written": [...], "cached": [...], "failed": [{"file", "error"}]} on stdout.
Needs PyPI onnxruntime (`npm run bench:peers` puts it in bench/.peers/venv).
"""
import json
import os
import sys

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process


class RandomBatches(CalibrationDataReader):
    def __init__(self, name, shape, count=4):
        rng = np.random.default_rng(0)
        self.batches = iter([{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(count)])

    def get_next(self):
        return next(self.batches, None)


def main():
    job = json.loads(sys.stdin.read())
    out = {"written": [], "cached": [], "failed": []}
    for m in job["models"]:
        dst = m["dst"]
        if os.path.exists(dst):
            out["cached"].append(dst)
            continue
        try:
            import onnx

            name = onnx.load(m["src"], load_external_data=False).graph.input[0].name
            tmp = dst + ".tmp.onnx"
            pre = dst + ".pre.onnx"
            quant_pre_process(m["src"], pre)
            quantize_static(
                pre,
                tmp,
                RandomBatches(name, m["shape"]),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
            os.remove(pre)
            os.replace(tmp, dst)
            out["written"].append(dst)
        except Exception as e:  # reported per model; the bench shows it in the table
            out["failed"].append({"file": dst, "error": str(e).splitlines()[0][:200]})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
