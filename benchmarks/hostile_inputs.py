"""Time and peak memory of refusing hostile inputs (issue 22): each case runs ``nas`` in a fresh
process and prints its exit status, wall time and peak resident memory (its own: nas.process.peak_rss_kib).

    PYTHONPATH=. python3 benchmarks/hostile_inputs.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
MEASURED_MAIN = """
import sys
from nas.cli import main
from nas.process import peak_rss_kib
try:
    status = main(sys.argv[1:])
except SystemExit as exc:  # argparse
    status = exc.code
print(peak_rss_kib())
sys.exit(status)
"""


def billion_laughs(levels: int) -> str:
    lines = ['lol0: &lol0 "lol"']
    lines += [f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n  ".join(lines)


def cases(tmp: Path) -> dict[str, list[str]]:
    space_text = (ROOT / "search_spaces" / "fashion_mnist.yaml").read_text()
    laughs = tmp / "laughs.yaml"
    laughs.write_text(space_text + "\ndescription:\n  " + billion_laughs(12) + "\n")
    wide = yaml.safe_load(space_text)
    wide["stages"][-1]["width"] = [16, 10**9]
    wide_space = tmp / "wide.yaml"
    wide_space.write_text(yaml.safe_dump(wide))
    deep = tmp / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    from nas.spec import mobilenetv3_small

    spec = mobilenetv3_small(num_classes=10, resolution=28, in_channels=1).to_string()
    return {
        "billion laughs (12 levels) in a space description": ["arch", "show", str(laughs)],
        "width 10^9 in a space": ["arch", "sample", str(wide_space), "--seed", "0"],
        "width 999999999 in a spec, nas train": ["train", spec.replace("stem_c16", "stem_c999999999"), "--steps", "1"],
        "last stage 60000 wide (7 GiB), nas latency measure": ["latency", "measure",
                                                               spec.replace("last_c576", "last_c60000")],
        "JSON nested 100,000 deep": ["arch", "show", str(deep)],
        "--epochs inf": ["train", "mobilenetv3-small", "--epochs", "inf"],
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'case':<52} {'exit':>4} {'seconds':>8} {'peak MiB':>9}")
        for name, argv in cases(Path(tmp)).items():
            start = time.perf_counter()
            result = subprocess.run([sys.executable, "-c", MEASURED_MAIN, *argv], capture_output=True, text=True,
                                    cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
            seconds = time.perf_counter() - start
            lines = result.stdout.strip().splitlines()
            peak = int(lines[-1]) / 1024 if lines and lines[-1].isdigit() else float("nan")
            print(f"{name:<52} {result.returncode:>4} {seconds:>8.2f} {peak:>9.0f}")


if __name__ == "__main__":
    main()
