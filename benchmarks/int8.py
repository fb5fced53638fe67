"""What int8 (onnxruntime static QDQ) buys on this CPU: accuracy and latency, fp32 vs int8.

1. A Fashion-MNIST network with trained weights (``--checkpoint``, or the space baseline trained for
   ``--steps`` steps here): test accuracy fp32 vs int8, latency fp32 vs int8 (nas export's figures).
2. MobileNetV3-Small and -Large at 224x224 (fresh weights, calibrated on random images: latency
   only), timed interleaved with the project's protocol.

    python benchmarks/int8.py [--checkpoint RUN/checkpoint.pt] [--steps 300] [--threads 1]

Figures from a busy machine are noisy; the IQR column says how much.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas.data import ImageDataset  # noqa: E402
from nas.export import QuantConfig, export, export_onnx, measure_onnx_files, quantize_int8  # noqa: E402
from nas.models import build_model  # noqa: E402
from nas.spec import count_madds, load_space, named_spec  # noqa: E402


def trained_checkpoint(args: argparse.Namespace, work: Path) -> Path:
    if args.checkpoint:
        return Path(args.checkpoint)
    from nas.train import TrainConfig, train_network

    spec = load_space(ROOT / "search_spaces" / "fashion_mnist.yaml").baseline
    print(f"training the Fashion-MNIST baseline for {args.steps} steps ...", file=sys.stderr)
    train_network(spec, "fashion-mnist", config=TrainConfig(steps=args.steps, threads=args.threads),
                  out=work / "run", progress=True)
    return work / "run" / "checkpoint.pt"


def fashion_row(args: argparse.Namespace, work: Path) -> dict:
    result = export(trained_checkpoint(args, work), work / "fashion", ["onnx", "onnx-int8"], data="fashion-mnist",
                    eval_images=args.eval_images, threads=args.threads)
    int8 = result.card["int8"]
    models = result.card["latency"]["measured"]["models"]
    return {"network": "fashion_mnist baseline (trained)", "MAdds_M": result.card["network"]["madds"] / 1e6,
            "fp32_acc": int8["fp32_acc"], "int8_acc": int8["int8_acc"], "fp32_ms": int8["fp32_ms"],
            "int8_ms": int8["int8_ms"], "speedup": int8["speedup"],
            "iqr_over_median": max(m["iqr_ms"] / m["median_ms"] for m in models.values())}


def random_images(spec, n: int = 64) -> ImageDataset:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, spec.in_channels, spec.resolution, spec.resolution), dtype=torch.uint8,
                           generator=generator)
    return ImageDataset(images, torch.zeros(n, dtype=torch.int64), [str(i) for i in range(spec.num_classes)],
                        (0.5,) * spec.in_channels, (0.25,) * spec.in_channels)


def named_row(name: str, args: argparse.Namespace, work: Path) -> dict:
    spec = named_spec(name)
    fp32 = export_onnx(build_model(spec, seed=0), spec, work / f"{name}.onnx")
    int8 = quantize_int8(fp32, work / f"{name}.int8.onnx", random_images(spec), QuantConfig(images=64))
    models = measure_onnx_files({"fp32": fp32, "int8": int8}, args.threads)["models"]
    return {"network": f"{name} 224 (fresh)", "MAdds_M": count_madds(spec) / 1e6, "fp32_acc": None,
            "int8_acc": None, "fp32_ms": models["fp32"]["median_ms"], "int8_ms": models["int8"]["median_ms"],
            "speedup": models["fp32"]["median_ms"] / models["int8"]["median_ms"],
            "iqr_over_median": max(m["iqr_ms"] / m["median_ms"] for m in models.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="trained Fashion-MNIST checkpoint (default: train one here)")
    parser.add_argument("--steps", type=int, default=300, help="training steps when no checkpoint is given")
    parser.add_argument("--eval-images", type=int, default=10000, help="test images for the accuracies")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-224", action="store_true", help="only the Fashion-MNIST network")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="nas-int8-bench-") as tmp:
        work = Path(tmp)
        rows = [fashion_row(args, work)]
        if not args.skip_224:
            rows += [named_row(name, args, work) for name in ("mobilenetv3-small", "mobilenetv3-large")]
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
