"""Build a space's table through a measurement server on this machine and validate it through the server.

    python benchmarks/remote_build.py [--space search_spaces/fashion_mnist.yaml] [--out DIR]
                                      [--samples 50] [--local]

Starts ``nas device serve`` on 127.0.0.1 (a free port, a token) in a Python where torch cannot be
imported, then runs, as a user would::

    nas lut build --space SPACE --device http://127.0.0.1:PORT --out DIR/remote
    nas lut validate DIR/remote --device http://127.0.0.1:PORT --samples N

and prints the build time, the entries and the validation figures. ``--local`` also builds and
validates the same space's table locally (``DIR/local``), one after the other, for the figures side
by side. Run it on a quiet machine: the figures are only as good as the machine is idle.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NO_TORCH = """
import runpy, sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError(f"{name} cannot be imported on this device")
sys.meta_path.insert(0, NoTorch())
sys.argv = ["nas", *sys.argv[1:]]
runpy.run_module("nas", run_name="__main__")
"""


def start_server(folder: Path) -> tuple[subprocess.Popen, str, Path]:
    token = folder / "token"
    token.write_text(secrets.token_urlsafe(24) + "\n")
    token.chmod(0o600)
    log = folder / "server.log"
    proc = subprocess.Popen([sys.executable, "-c", NO_TORCH, "device", "serve", "--port", "0", "--token-file",
                             str(token)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    while proc.poll() is None:
        found = re.search(r"on (http://127\.0\.0\.1:\d+)", log.read_text())
        if found:
            return proc, found.group(1), token
        time.sleep(0.05)
    raise SystemExit(f"the server did not start: {log.read_text()}")


def nas(*args: str, env: dict | None = None) -> dict:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "nas", *args, "--json"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise SystemExit(f"nas {' '.join(args)} failed: {result.stderr.strip()}")
    return {**json.loads(result.stdout), "wall_s": round(time.perf_counter() - start, 1)}


def build_and_validate(space: str, out: Path, samples: int, remote: list[str]) -> tuple[dict, dict]:
    built = nas("lut", "build", "--space", space, "--out", str(out), "--no-progress", *remote)
    validated = nas("lut", "validate", str(out), "--samples", str(samples), "--no-progress", *remote)
    return built, validated


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="search_spaces/fashion_mnist.yaml")
    parser.add_argument("--out", help="keep the tables here (default: a temporary folder)")
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--local", action="store_true", help="also build and validate locally, for comparison")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nas-remote-") as tmp:
        out = Path(args.out or tmp)
        out.mkdir(parents=True, exist_ok=True)
        proc, url, token = start_server(Path(tmp))
        try:
            runs = {"remote": build_and_validate(args.space, out / "remote", args.samples,
                                                 ["--device", url, "--token-file", str(token)])}
        finally:
            proc.kill()
            proc.wait()
        if args.local:
            runs["local"] = build_and_validate(args.space, out / "local", args.samples, [])
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = re.search(r"Model name:\s*(.+)", cpu)
    print(f"CPU: {model.group(1).strip() if model else 'unknown'}, {os.cpu_count()} cores; space {args.space}")
    print(f"{'build':<8}{'entries':>9}{'build s':>9}{'within ±5 %':>13}{'within ±10 %':>14}{'MAPE':>8}{'Spearman':>10}")
    for name, (built, v) in runs.items():
        print(f"{name:<8}{built['entries']:>9}{built['wall_s']:>9.1f}{v['within_5']:>13.1%}{v['within_10']:>14.1%}"
              f"{v['mape']:>8.1%}{v['spearman']:>10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
