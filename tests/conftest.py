import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPACE_FILES = sorted((ROOT / "search_spaces").glob("*.yaml"))


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m nas ARGS`` in a fresh process (as a user would)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "nas", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=full_env)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Bad input: exit status 2, one line on stderr naming the problem, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(params=SPACE_FILES, ids=[p.stem for p in SPACE_FILES])
def space_file(request) -> Path:
    return request.param


@pytest.fixture
def one_thread():
    """torch on one thread for the test (the suite shares 2 cores); restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def fashion_tables(tmp_path_factory) -> Path:
    """A Fashion-MNIST folder of tables holding one of this machine (a copy of a shipped table made
    this machine's) and the shipped AMD EPYC table; a test never builds the whole space's table."""
    import shutil

    from tests.latency_helpers import SHIPPED_FASHION, SHIPPED_FASHION_AMD, as_this_machines_table

    folder = tmp_path_factory.mktemp("tables") / "fashion_mnist"
    as_this_machines_table(SHIPPED_FASHION, folder)
    shutil.copytree(SHIPPED_FASHION_AMD, folder / SHIPPED_FASHION_AMD.name)
    return folder


@pytest.fixture
def tiny_test_experiment(tmp_path, fashion_tables) -> Path:
    """experiments/tiny_test.yaml with its table folder set to :func:`fashion_tables`."""
    import yaml

    data = yaml.safe_load((ROOT / "experiments" / "tiny_test.yaml").read_text())
    data["space"] = str(ROOT / "search_spaces" / "fashion_mnist.yaml")
    data["latency"]["table"] = str(fashion_tables)
    data["out"] = str(tmp_path / "tiny_test_out")
    path = tmp_path / "tiny_test.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
