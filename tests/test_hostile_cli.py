"""Every CLI command with garbage arguments: one line on stderr, exit status 2 (within 30 s when run
as a user would, in a fresh process)."""

from __future__ import annotations

import argparse

import pytest

from conftest import assert_one_line_error, run_cli
from nas.cli import build_parser, main

GARBAGE_PATH = "/nonexistent/\u0661\u0666 ;garbage.yaml"
JUNK = {".yaml": b"\x00\xff\xfe garbage: [", ".json": b'{"format": "nas-arch/1", "blocks": ' + b"[" * 5000,
        ".pt": b"PK\x03\x04" + bytes(range(256)) * 4, ".onnx": b"\x08\x07junk", "": "a: &a [*a]".encode()}
BAD_NUMBERS = ("nan", "inf", "-inf", "1e999", "-1", "\u0661\u0666", "1_000", "0x10", "", "9" * 40)


def leaf_commands() -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """(command words) -> parser, for every command that runs something."""
    found = {}

    def walk(parser, words):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            found[words] = parser
        for sub in subs:
            for name, child in sub.choices.items():
                walk(child, words + (name,))

    walk(build_parser(), ())
    return found


LEAVES = leaf_commands()


def garbage_argv(words: tuple[str, ...], parser: argparse.ArgumentParser, tmp_path,
                 positional: str = GARBAGE_PATH) -> list[str]:
    """Positionals that name nothing (or a junk file), required options filled with garbage (or a valid choice);
    ``--host`` too (a server without arguments is valid and serves)."""
    argv = list(words)
    for action in parser._actions:
        if not action.option_strings and action.dest not in ("help",):
            argv.append(positional)
        elif action.required or action.dest in ("space", "host"):
            if action.choices:
                value = list(action.choices)[0]
            elif action.dest == "out":
                value = str(tmp_path / "out")
            elif getattr(action.type, "__name__", "") in ("integer", "number"):
                value = "1"
            else:
                value = GARBAGE_PATH
            argv += [action.option_strings[0], str(value)]
    for group in parser._mutually_exclusive_groups:
        if group.required:
            argv += [group._group_actions[-1].option_strings[0], "1"]
    return argv


def numeric_options(parser: argparse.ArgumentParser) -> list[str]:
    return [a.option_strings[0] for a in parser._actions
            if a.option_strings and getattr(a.type, "__name__", "") in ("integer", "number")]


def one_line_exit_2(argv, capsys) -> str:
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2, (argv, status, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, (argv, err)
    return lines[0]


def test_every_command_is_covered():
    assert {" ".join(w) for w in LEAVES} >= {"arch show", "arch sample", "train", "search", "export", "lut build",
                                              "lut export-kernels", "lut import", "lut validate", "latency predict",
                                              "latency measure", "netadapt", "run", "supernet train"}


@pytest.mark.parametrize("words", sorted(LEAVES), ids=" ".join)
def test_garbage_arguments_are_one_line_exit_2(words, tmp_path, capsys):
    parser = LEAVES[words]
    one_line_exit_2(list(words) + ["--no-such-option"], capsys)
    one_line_exit_2(garbage_argv(words, parser, tmp_path), capsys)
    for option in numeric_options(parser):
        for value in BAD_NUMBERS[:4] if option != numeric_options(parser)[0] else BAD_NUMBERS:
            line = one_line_exit_2(garbage_argv(words, parser, tmp_path) + [option, value], capsys)
            assert option in line, line
    for suffix, junk in JUNK.items():
        path = tmp_path / f"junk{suffix}"
        path.write_bytes(junk)
        one_line_exit_2(garbage_argv(words, parser, tmp_path, str(path)), capsys)
    file = tmp_path / "a-file"
    file.write_text("x")
    if "--out" in parser._option_string_actions:
        line = one_line_exit_2(garbage_argv(words, parser, tmp_path) + ["--out", str(file)], capsys)
        assert "not a folder" in line


@pytest.mark.slow
@pytest.mark.parametrize("words", sorted(LEAVES), ids=" ".join)
def test_garbage_arguments_in_a_fresh_process_within_30s(words, tmp_path):
    argv = garbage_argv(words, LEAVES[words], tmp_path)
    assert_one_line_error(run_cli(*argv, timeout=30))
