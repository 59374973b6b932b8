"""The `evo1` tool's model commands: they run and print the figures they promise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
    assert "path off" in printed and "chunks/s" in printed and "peak memory" in printed
    figures = json.loads(out.read_text())
    for key in ("cached", "uncached"):
        assert 0 < figures[key]["ms_p50"] <= figures[key]["ms_p95"]
        assert figures[key]["chunks_per_s"] > 0
    assert figures["steps"] == 2 and figures["peak_memory_mb"] > 0


def test_unknown_preset_is_one_clear_error(capsys) -> None:
    assert main(["info", "--config", "evo1-huge"]) == 1
    assert "unknown preset 'evo1-huge'" in capsys.readouterr().err


def test_shipped_names_resolve_and_help_shows_defaults(capsys) -> None:
    assert main(["info", "--checkpoint", "sim_touch", "--json"]) == 0  # a shipped name, not a folder
    assert json.loads(capsys.readouterr().out)["checkpoint"]["format"] == "evo1_ros"
    assert main(["info", "--preset", "evo1-tiny"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "(default: cpu)" in capsys.readouterr().out


def test_version_and_a_wrong_flag_name_the_subcommand(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("evo1 ")
    with pytest.raises(SystemExit) as done:
        main(["info", "--bogus"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "usage: evo1 info" in err and "unrecognized arguments: --bogus" in err


def test_checkpoints_are_readable_by_others(tmp_path: Path) -> None:
    import os

    from evo1_policy.policy import Evo1Policy

    previous = os.umask(0o022)
    try:
        Evo1Policy.from_preset("evo1-tiny", 3, 3, device="cpu").save(tmp_path / "ckpt")
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "ckpt").iterdir()}
    assert modes and all(mode == 0o644 for mode in modes.values()), modes
