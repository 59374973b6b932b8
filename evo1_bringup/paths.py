"""Where the suite's data lives: the ament share folder when installed, else this checkout."""

from __future__ import annotations

from pathlib import Path

PACKAGE = "evo1_bringup"
_CHECKOUT = Path(__file__).resolve().parents[1]


def share_dir() -> Path:
    """share/evo1_bringup of a colcon install, or the checkout (which has the same launch/ and config/)."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            return Path(get_package_share_directory(PACKAGE))
        except (PackageNotFoundError, KeyError, ValueError, OSError):
            pass
    except ImportError:
        pass
    return _CHECKOUT


def config_path(name_or_path: str) -> Path:
    """An arm config by file path, or by name in config/ ('sim_arm' or 'sim_arm.yaml')."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = path.name if path.suffix == ".yaml" else f"{path.name}.yaml"
    for folder in (share_dir() / "config", _CHECKOUT / "config"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"arm config {name_or_path!r} not found; the suite ships {shipped_arm_configs()}")


def shipped_arm_configs() -> list[str]:
    """Names of the arm configs in config/ (the node's parameter files)."""
    return sorted(p.stem for p in (_CHECKOUT / "config").glob("*.yaml") if "ros__parameters" in p.read_text())


def training_config_path(name_or_path: str) -> Path:
    """A training or stage-0 YAML by file path, or by name in config/train/ ('train_sim',
    'train_sim.yaml', or the path it had before config/train/ existed, 'config/train_sim.yaml')."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    for folder in (share_dir() / "config" / "train", _CHECKOUT / "config" / "train"):
        if (folder / name).is_file():
            return folder / name
    shipped = sorted(p.stem for p in (_CHECKOUT / "config" / "train").glob("*.yaml"))
    raise FileNotFoundError(f"training config {name_or_path!r} not found; the suite ships {shipped} in config/train/")


def checkpoint_path(name_or_path: str) -> Path:
    """A checkpoint folder by path, or by name in models/ (the policies the suite ships)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    for folder in (share_dir() / "models", _CHECKOUT / "models"):
        if (folder / name_or_path).is_dir():
            return folder / name_or_path
    shipped = sorted(p.name for p in (_CHECKOUT / "models").glob("*") if p.is_dir())
    raise FileNotFoundError(f"checkpoint {name_or_path!r} is neither a folder nor one the suite ships ({shipped})")


def checkpoint_arg(value: str) -> str:
    """argparse type of every --checkpoint: a folder, or the name of a policy the suite ships."""
    return str(checkpoint_path(value))
