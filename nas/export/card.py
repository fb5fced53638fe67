"""The model card: ``model_card.json`` (plain data) and ``MODEL_CARD.md`` (the same, for people).

A card says what the network is (spec string and JSON, params, MAdds), how fast it is (predicted
from a latency table if one was given; measured on this machine with the project's protocol), how
accurate it is if that is known (data set, split), and where and when the numbers were taken.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from nas.io import write_json_atomic, write_text_atomic

CARD_JSON = "model_card.json"
CARD_MD = "MODEL_CARD.md"
CARD_FORMAT = "nas-model-card/1"


def machine_info(threads: int) -> dict[str, Any]:
    """CPU, cores, ISA flags, OS and the versions the numbers depend on (the latency protocol's
    device fingerprint, plus torch/onnx/nas versions)."""
    import onnx

    import nas
    from nas.latency import this_device

    return this_device("onnxruntime", threads) | {"onnx": onnx.__version__, "nas": nas.__version__,
                                                  "python": platform.python_version()}


def write_card(card: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``model_card.json`` and ``MODEL_CARD.md`` into ``out_dir``; returns both paths."""
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / CARD_JSON, out_dir / CARD_MD
    write_json_atomic(json_path, card)
    write_text_atomic(md_path, card_markdown(card))
    return [json_path, md_path]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} ms"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def _sizes(splits: dict | None) -> str:
    return "unknown" if not isinstance(splits, dict) else ", ".join(f"{k} {v:,}" for k, v in splits.items())


def card_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown, in the order a reader asks: what, how fast, how good, where."""
    net, lat, acc, machine = card["network"], card["latency"], card.get("accuracy"), card["machine"]
    lines = [f"# Model card: {net['hash']}", "",
             f"Exported {card['date']} by nas {machine['nas']} from `{card['source']['path']}` "
             f"({card['source']['weights']}).", "",
             "## Network", "", f"`{net['string']}`", "",
             "| input | classes | params | MAdds |", "| --- | --- | --- | --- |",
             f"| {net['input_shape']} | {net['num_classes']} | {net['params']:,} | {net['madds'] / 1e6:.2f} M |", ""]
    if card.get("normalization"):
        norm = card["normalization"]
        lines += [f"Inputs are float32 NCHW, normalised as (x / 255 - mean) / std with mean {norm['mean']} and "
                  f"std {norm['std']}.", ""]
    check = card["check"]
    lines += ["## Files", "", f"Each model was run on a random batch of {check['batch']} (seed {check['seed']}) and "
              f"compared with PyTorch; the largest |logit| was {check['max_abs_logit']:.3g}.", "",
              "| file | format | bytes | max abs diff vs PyTorch |", "| --- | --- | --- | --- |"]
    for f in card["files"]:
        diff = f.get("max_abs_diff")
        lines.append(f"| {f['file']} | {f['format']} | {f['bytes']:,} | {'-' if diff is None else f'{diff:.2e}'} |")
    lines += ["", "## Latency", ""]
    predicted = lat.get("predicted")
    if predicted:
        lines.append(f"Predicted for device `{predicted.get('device')}` from table `{predicted['table']}`: "
                     f"{_ms(predicted['ms'])}.")
    else:
        lines.append("Predicted: no latency table given.")
    measured = lat.get("measured")
    if measured:
        lines += ["", f"Measured on this machine, device `{measured.get('device')}` ({measured['runtime']}, "
                      f"{measured['threads']} thread(s), batch 1, "
                      f"protocol {measured['protocol']}):", "",
                  "| model | median | IQR | runs |", "| --- | --- | --- | --- |"]
        for name, m in measured["models"].items():
            lines.append(f"| {name} | {_ms(m['median_ms'])} | {_ms(m['iqr_ms'])} | {m['runs']} |")
        if not all(m["steady"] for m in measured["models"].values()):
            lines += ["", "Warning: IQR/median above the protocol's limit: the machine was busy; re-measure "
                          "on a quiet machine before relying on these figures."]
    else:
        lines.append(f"Measured: {lat.get('not_measured') or 'not measured'}.")
    lines += ["", "## Accuracy", ""]
    if acc and acc.get("checkpoint"):
        ck = acc["checkpoint"]
        lines.append(f"From the checkpoint's metrics on {ck.get('data')}: test {_pct(ck.get('test_acc'))}, "
                     f"val {_pct(ck.get('val_acc'))} (split sizes: {_sizes(ck.get('splits'))}).")
    else:
        lines.append("Unknown: the weights do not come from a checkpoint with a test accuracy.")
    int8 = card.get("int8")
    if int8:
        lines += ["", "## int8", "", int8["method"] + ".", "",
                  f"On the first {int8['eval_images']} images of the {int8['data']} {int8['split']} split: "
                  f"fp32 {_pct(int8['fp32_acc'])}, int8 {_pct(int8['int8_acc'])} "
                  f"(change {100 * int8['acc_change']:+.2f} points).", ""]
        if int8.get("speedup") is not None:
            lines.append(f"Latency fp32 {_ms(int8['fp32_ms'])} -> int8 {_ms(int8['int8_ms'])} "
                         f"(speed-up x{int8['speedup']:.2f}).")
        lines += ["", int8["note"]]
    lines += ["", "## Machine", "", "| | |", "| --- | --- |"]
    for key in ("cpu_model", "cores", "isa_flags", "os", "python", "torch", "onnxruntime", "onnx", "numpy", "nas"):
        value = machine.get("runtime_version") if key == "onnxruntime" else machine.get(key)
        lines.append(f"| {key} | {', '.join(value) if isinstance(value, list) else value} |")
    lines += ["", "## Spec (JSON)", "", "```json", json.dumps(net["spec"], indent=2), "```", ""]
    return "\n".join(lines)
