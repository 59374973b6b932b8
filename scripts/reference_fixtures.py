"""Numbers produced by the reference implementation (MINT-SJTU/Evo-1), for test/test_reference.py.

Runs the reference's pure-torch parts at toy sizes, once per era, and writes what they computed:
- the flow-matching head (model/action_head/flow_matching.py): its weights, its inputs and the
  chunk its get_action samples from a seeded noise;
- the server's Normalizer (scripts/Evo1_server.py, the class only, taken out of the file with
  `ast` because the server module itself needs websockets and fvcore);
- the embedder's ImageNet constants (the black missing view).
Nothing of the reference is copied into this project: the script imports it from a checkout.

    git clone https://github.com/MINT-SJTU/Evo-1 /tmp/Evo-1
    git -C /tmp/Evo-1 worktree add /tmp/Evo-1-flash evo1-flash
    .venv/bin/python scripts/reference_fixtures.py --main /tmp/Evo-1 --flash /tmp/Evo-1-flash

It needs torch only (CPU, float32).
"""

from __future__ import annotations

import argparse
import ast
import enum
import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "test" / "data" / "reference"
# The toy head: the reference's shapes with small numbers (embed_dim = the LM width).
HEAD = {
    "embed_dim": 32,
    "hidden_dim": 16,
    "horizon": 4,
    "per_action_dim": 24,
    "state_dim": 24,
    "state_hidden_dim": 16,
    "num_heads": 4,
    "num_layers": 2,
    "dropout": 0.0,
    "num_categories": 1,
}
BATCH, CONTEXT, REAL_DIMS = 2, 10, 7
WEIGHT_SEED, INPUT_SEED, NOISE_SEED = 0, 1, 2


def load_module(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_classes(path: Path, names: list[str], namespace: dict[str, Any]) -> dict[str, Any]:
    """The named top-level classes of a reference file, executed without importing the file."""
    tree = ast.parse(path.read_text())
    nodes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in names]
    exec(compile(ast.Module(body=nodes, type_ignores=[]), str(path), "exec"), namespace)
    return {name: namespace[name] for name in names}


def constant(path: Path, name: str) -> Any:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise KeyError(f"{name} not found in {path}")


def server_steps(root: Path) -> int:
    """The Euler steps the era's server forces: its `config["num_inference_timesteps"] = N`."""
    for node in ast.walk(ast.parse((root / "Evo_1/scripts/Evo1_server.py").read_text())):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript):
            key = node.targets[0].slice
            if isinstance(key, ast.Constant) and key.value == "num_inference_timesteps":
                return int(ast.literal_eval(node.value))
    raise KeyError(f"no num_inference_timesteps assignment in {root}/Evo_1/scripts/Evo1_server.py")


def head_fixture(root: Path, era: str, steps: int) -> dict[str, torch.Tensor]:
    flow = load_module(root / "Evo_1/model/action_head/flow_matching.py", f"reference_flow_{era}")
    config = SimpleNamespace(
        **HEAD,
        action_dim=HEAD["horizon"] * HEAD["per_action_dim"],
        num_inference_timesteps=steps,
    )
    torch.manual_seed(WEIGHT_SEED)
    head = flow.FlowmatchingActionHead(config=config).eval()
    generator = torch.Generator().manual_seed(INPUT_SEED)
    fused = torch.randn(BATCH, CONTEXT, HEAD["embed_dim"], generator=generator)
    state = torch.rand(BATCH, HEAD["state_dim"], generator=generator) * 2 - 1
    mask = torch.zeros(BATCH, HEAD["per_action_dim"], dtype=torch.int32)
    mask[:, :REAL_DIMS] = 1
    torch.manual_seed(NOISE_SEED)  # get_action draws its noise from the global generator
    with torch.no_grad():
        actions = head.get_action(fused, state=state, action_mask=mask)
    weights = {f"weights.action_head.{k}": v.contiguous() for k, v in head.state_dict().items()}
    return {
        **weights,
        "input.fused_tokens": fused,
        "input.state": state,
        "input.action_mask": mask,
        "output.actions": actions.reshape(BATCH, HEAD["horizon"], HEAD["per_action_dim"]).contiguous(),
    }


STATS = {  # 5 state / 5 action dims; dim 2 never moved (min == max)
    "observation.state": {
        "min": [-1.0, 0.0, 0.5, -2.0, 0.1],
        "max": [1.0, 2.0, 0.5, 2.0, 0.3],
        "mean": [0.0, 1.0, 0.5, 0.1, 0.2],
        "std": [0.5, 0.4, 0.0, 1.0, 0.05],
        "q01": [-0.9, 0.1, 0.5, -1.8, 0.11],
        "q99": [0.9, 1.9, 0.5, 1.8, 0.29],
    },
    "action": {
        "min": [-1.0, 0.0, 0.5, -2.0, 0.0],
        "max": [1.0, 2.0, 0.5, 2.0, 1.0],
        "mean": [0.0, 1.0, 0.5, 0.1, 0.5],
        "std": [0.5, 0.4, 0.0, 1.0, 0.3],
        "q01": [-0.9, 0.1, 0.5, -1.8, 0.05],
        "q99": [0.9, 1.9, 0.5, 1.8, 0.95],
    },
}
STATE = [[0.3, 2.5, 0.5, -1.0, 0.2]]  # dim 1 beyond its max (clamped), dim 2 at its only value
MODEL_ACTIONS = [[-1.2, 0.0, 0.7, 1.3, 0.5] + [0.25] * 19, [0.9, -0.4, -1.0, 0.0, 1.1] + [0.0] * 19]


def normalizer_fixture(main: Path, flash: Path) -> dict[str, Any]:
    namespace: dict[str, Any] = {"torch": torch, "json": json, "logging": __import__("logging"), "Enum": enum.Enum}
    main_cls = load_classes(main / "Evo_1/scripts/Evo1_server.py", ["Normalizer"], dict(namespace))["Normalizer"]
    flash_ns = dict(namespace)
    load_classes(flash / "Evo_1/dataset/lerobot_dataset_pretrain_mp.py", ["NormalizationType"], flash_ns)
    flash_cls = load_classes(flash / "Evo_1/scripts/Evo1_server.py", ["Normalizer"], flash_ns)["Normalizer"]

    out: dict[str, Any] = {"stats": STATS, "state": STATE, "model_actions": MODEL_ACTIONS}
    # main: one arm; the server pads the state to 24 with zeros before normalising
    normalizer = main_cls({"arm": STATS})
    state = torch.tensor(STATE)
    padded = torch.cat([state, torch.zeros(1, 24 - state.shape[1])], dim=1)
    out["main"] = {
        "state": normalizer.normalize_state(padded).tolist(),
        "actions": normalizer.denormalize_action(torch.tensor(MODEL_ACTIONS)).tolist(),
    }
    # flash: {arm: {dataset: stats}}, the dataset picked per request; three normalisation types
    doubled = {feature: {name: [2 * x for x in v] for name, v in d.items()} for feature, d in STATS.items()}
    stats_map = {"arm": {"task_a": STATS, "task_b": doubled}}
    out["flash_stats"] = stats_map
    out["flash"] = {}
    for kind in ("bounds", "bounds_q99", "normal"):
        normalizer = flash_cls(stats_map, normalization_type=kind)
        out["flash"][kind] = {
            key: {
                "state": normalizer.normalize_state(state, "arm", key).tolist(),
                "actions": normalizer.denormalize_action(torch.tensor(MODEL_ACTIONS), "arm", key).tolist(),
            }
            for key in ("task_a", "task_b")
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--main", type=Path, required=True, help="checkout of the reference's branch main")
    parser.add_argument("--flash", type=Path, required=True, help="checkout of its branch evo1-flash")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    steps = {"main": server_steps(args.main), "flash": server_steps(args.flash)}
    for era, root in (("main", args.main), ("flash", args.flash)):
        save_file(head_fixture(root, era, steps[era]), str(OUT / f"{era}_head.safetensors"))
    mean = constant(args.main / "Evo_1/model/internvl3/internvl3_embedder.py", "IMAGENET_MEAN")
    std = constant(args.main / "Evo_1/model/internvl3/internvl3_embedder.py", "IMAGENET_STD")
    black = ((torch.zeros(3) - torch.tensor(mean)) / torch.tensor(std)).tolist()  # T.Normalize of a zero image
    fixture = {
        "command": "python scripts/reference_fixtures.py --main <Evo-1 main> --flash <Evo-1 evo1-flash>",
        "head": {
            **HEAD,
            "steps": steps,
            "batch": BATCH,
            "context": CONTEXT,
            "real_dims": REAL_DIMS,
            "seeds": {"weights": WEIGHT_SEED, "inputs": INPUT_SEED, "noise": NOISE_SEED},
        },
        "black_view": black,
        "normalizer": normalizer_fixture(args.main, args.flash),
    }
    (OUT / "reference_fixtures.json").write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
