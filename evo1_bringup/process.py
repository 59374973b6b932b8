"""Starting the policy node as a process of its own, with a params file and overrides: the one
recipe `evo1 sim-eval`, `bench-node`, `fuzz-node` and the tests use. No ROS or torch import here,
so an orchestrating process stays light."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

NODE_MODULE = "evo1_bringup.node"


def ros_value(value: object) -> str:
    """A parameter value as `-p name:=value` takes it (booleans lower-case)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def ros_arguments(
    params_file: str | Path, overrides: dict[str, Any] | None = None, namespace: str = "", enclave: str = ""
) -> list[str]:
    """`--ros-args --params-file FILE -p name:=value ... [-r __ns:=/NS] [--enclave /E]`."""
    args = ["--ros-args", "--params-file", str(params_file)]
    for name, value in (overrides or {}).items():
        args += ["-p", f"{name}:={ros_value(value)}"]
    if namespace.strip("/"):
        args += ["-r", f"__ns:=/{namespace.strip('/')}"]
    if enclave:
        args += ["--enclave", enclave]
    return args


def start_policy_node(
    params_file: str | Path,
    overrides: dict[str, Any] | None = None,
    output: str | Path | int | None = subprocess.DEVNULL,
    env: dict[str, str] | None = None,
    namespace: str = "",
) -> subprocess.Popen:
    """The policy node in a new process of this interpreter. output: a log file path, or
    subprocess.PIPE (text) / DEVNULL. Unbuffered, so a log shows everything up to a crash."""
    command = [sys.executable, "-m", NODE_MODULE, *ros_arguments(params_file, overrides, namespace)]
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    if isinstance(output, (str, Path)):
        with Path(output).open("w") as handle:  # the child keeps its own descriptor
            return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, text=True)
