"""Inference (logits only), convprop's context-free eval path vs ONNX Runtime vs PyTorch eager, fp32.

Run ``python benchmarks/inference.py`` (``--quick`` for fewer repetitions, ``--models lenet``,
``--batches 1,64``). For the default model (``lenet``) and ``resnet``, at batch 1, 64 and 1,000, all
three run the *same weights*: ONNX Runtime (2 intra-op threads, all graph optimisations) loads the
file ``convprop.onnx.export`` writes — or, where that is not available in this checkout, the file
``torch.onnx.export`` writes from the PyTorch twin built from convprop's state_dict (the line
``onnx file from`` says which); PyTorch runs the twin under ``no_grad``. Repetitions are interleaved
(convprop, ORT, torch, convprop, ...) and the minimum of each is reported, with the ratios
convprop / ORT and convprop / torch and the largest difference between the logits.

Targets (issue 15): <= 1.25x ONNX Runtime's time at batch 1,000 and 64, <= 3x at batch 1, and never
slower than PyTorch eager (ratio to torch <= 1).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import THREADS, interleaved_min, limited_threads, print_environment
from twins import torch_twin

REPS = {1: 100, 64: 40, 1000: 8}  # interleaved rounds per batch size (--quick: a quarter), each after SETTLE
TARGET_ORT = {1: 3.0, 64: 1.25, 1000: 1.25}


def onnx_file(model, twin, directory: Path, image_shape: tuple[int, ...]) -> tuple[Path, str]:
    """The model as an ONNX file (batch axis symbolic), and which exporter wrote it."""
    path = directory / "model.onnx"
    try:
        from convprop.onnx import export
    except ImportError:
        export = None
    if export is not None:
        export(model, path, (1, *image_shape))
        return path, "convprop.onnx.export"
    import torch

    dummy = torch.zeros((1, *image_shape))
    warnings.filterwarnings("ignore", message="You are using the legacy TorchScript")  # dynamo needs onnxscript
    torch.onnx.export(twin, (dummy,), str(path), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}}, dynamo=False)  # fmt: skip
    return path, "torch.onnx.export of the PyTorch twin (convprop.onnx is not in this checkout)"


def ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the repetitions (noisier)")
    parser.add_argument("--models", default="lenet,resnet", help="comma-separated model names")
    parser.add_argument("--batches", default="1,64,1000", help="comma-separated batch sizes")
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import torch

    from convprop.models import build_model

    image_shape = (1, 28, 28)
    rng = np.random.default_rng(0)
    with limited_threads(), tempfile.TemporaryDirectory() as tmp:
        print_environment()
        print(f"onnxruntime {ort.__version__}, intra-op threads {THREADS}; fp32; logits only\n")
        print(f"{'model':7s} {'batch':>5s} {'convprop ms':>12s} {'ORT ms':>9s} {'torch ms':>9s} "
              f"{'/ORT':>6s} {'target':>6s} {'/torch':>7s} {'max |diff|':>10s}")  # fmt: skip
        for name in args.models.split(","):
            model = build_model(name, 1, image_shape[1:], 10, rng=0).eval()
            twin = torch_twin(model).eval()
            (Path(tmp) / name).mkdir()
            path, exporter = onnx_file(model, twin, Path(tmp) / name, image_shape)
            session = ort_session(path)
            print(f"# {name}: onnx file from {exporter}", flush=True)
            for batch in (int(b) for b in args.batches.split(",")):
                x = rng.standard_normal((batch, *image_shape), dtype=np.float32)
                xt = torch.from_numpy(x)

                def run_torch(xt=xt, twin=twin):
                    with torch.no_grad():
                        return twin(xt)

                candidates = {
                    "convprop": lambda x=x, model=model: model.forward(x),
                    "ort": lambda x=x, s=session: s.run(None, {s.get_inputs()[0].name: x})[0],
                    "torch": run_torch,
                }
                ours, theirs, torchs = (fn() for fn in candidates.values())
                diff = max(np.abs(ours - theirs).max(), np.abs(ours - torchs.numpy()).max())
                reps = max(3, REPS.get(batch, 10) // (4 if args.quick else 1))
                t = interleaved_min(candidates, reps, warmup=2)
                to_ort, to_torch = t["convprop"] / t["ort"], t["convprop"] / t["torch"]
                print(f"{name:7s} {batch:5d} {t['convprop'] * 1e3:12.3f} {t['ort'] * 1e3:9.3f} {t['torch'] * 1e3:9.3f} "
                      f"{to_ort:6.2f} {TARGET_ORT.get(batch, 1.25):6.2f} {to_torch:7.2f} {diff:10.2e}",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
