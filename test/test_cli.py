"""The `evo1` tool's model commands: they run and print the figures they promise."""

from __future__ import annotations

import json
from pathlib import Path

from evo1_bringup.cli import main


def test_info_counts_parameters(capsys) -> None:
    assert main(["info", "--config", "evo1-0.77b", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    counts = result["parameters"]
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
    assert abs(counts["total"] - 0.77e9) / 0.77e9 < 0.03 and result["tokens_per_view"] == 256


def test_bench_prints_and_writes_figures(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "--config", "evo1-tiny", "--steps", "2", "--repeats", "3", "--warmup", "1",
            "--uncached-repeats", "2", "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "prefix cache on" in printed and "chunks/s" in printed and "peak memory" in printed
    figures = json.loads(out.read_text())
    for key in ("cached", "uncached"):
        assert 0 < figures[key]["ms_p50"] <= figures[key]["ms_p95"]
        assert figures[key]["chunks_per_s"] > 0
    assert figures["steps"] == 2 and figures["peak_memory_mb"] > 0


def test_unknown_preset_is_one_clear_error(capsys) -> None:
    assert main(["info", "--config", "evo1-huge"]) == 1
    assert "unknown preset 'evo1-huge'" in capsys.readouterr().err
