"""Is onnxruntime faster than torch for the shipped nuclei networks on this CPU? (issue 5; not product code)

    pip install --target /tmp/ort onnxruntime && rm -rf /tmp/ort/numpy*   # keep the venv's numpy
    .venv/bin/microseg export --model nuclei_fluorescence_fast --out /tmp/fast.onnx
    .venv/bin/microseg export --model nuclei_fluorescence --out /tmp/main.onnx
    PYTHONPATH=/tmp/ort .venv/bin/python benchmarks/experiments/onnxruntime/bench_ort.py

Times one batch of 2 tiles of 448 x 448 (what segment runs on a 2048 x 2048 image, batch by
batch) through the torch network the product runs (BatchNorm folded, channels-last) and through
onnxruntime's CPU provider on the exported graph, alternating, 4 times each, 2 threads; prints
the largest output difference and the ratio of the best times.
"""

from __future__ import annotations

import time

import numpy as np
import torch


def main() -> None:
    import onnxruntime as ort

    from napari_microseg.io.models import load_model
    from napari_microseg.training.predict import inference_network

    torch.set_num_threads(2)
    x = np.random.default_rng(0).random((2, 1, 448, 448)).astype(np.float32)
    for model, onnx_path in (("nuclei_fluorescence_fast", "/tmp/fast.onnx"), ("nuclei_fluorescence", "/tmp/main.onnx")):
        net = inference_network(load_model(model, device="cpu"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        with torch.inference_mode():
            reference = net(torch.from_numpy(x).contiguous(memory_format=torch.channels_last)).float().numpy()
        print(model, "max |onnxruntime - torch|", float(np.abs(session.run(None, {name: x})[0] - reference).max()))
        torch_s, ort_s = [], []
        for _ in range(4):
            start = time.perf_counter()
            with torch.inference_mode():
                net(torch.from_numpy(x).contiguous(memory_format=torch.channels_last))
            torch_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            session.run(None, {name: x})
            ort_s.append(time.perf_counter() - start)
        print(f"{model}: torch {min(torch_s):.3f} s, onnxruntime {min(ort_s):.3f} s (best of 4): "
              f"onnxruntime {min(torch_s) / min(ort_s):.2f}x")


if __name__ == "__main__":
    main()
