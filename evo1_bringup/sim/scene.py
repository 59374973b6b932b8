"""The simulated workcell, in MuJoCo: a 5-joint arm with a two-finger gripper, a table, and
coloured cubes at random places; rendered headless (EGL, or OSMesa), stepped kinematically.

No ROS here: arm.py wraps it in a driver node, expert.py solves its task with inverse
kinematics from MuJoCo's Jacobians. The arm's joints are those of config/sim_arm.yaml.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from evo1_policy.headless import use_headless_gl

use_headless_gl()

import mujoco  # noqa: E402  (after the GL choice)

ARM_JOINTS = ("joint1", "joint2", "joint3", "joint4", "joint5")
GRIPPER_OPENING = 0.03  # finger travel (m) at gripper = 1
HOME = np.array([0.0, -0.155, 1.713, 1.584, 0.0, 0.0])  # arm joints + gripper: tip above the table, pointing down
CUBE_HALF = 0.025
TABLE_COLOR = (0.78, 0.72, 0.62)
CUBE_COLORS = {"red": (0.85, 0.12, 0.1), "green": (0.1, 0.65, 0.2), "blue": (0.12, 0.25, 0.85)}
# Cubes are placed in this area of the table (x forward from the arm's base, y to its left)...
PLACEMENT_LOW, PLACEMENT_HIGH = np.array([0.25, -0.2]), np.array([0.42, 0.2])
MIN_SEPARATION = 0.1  # ... with at least this much between cube centres
TOUCH_MARGIN = 0.012  # the fingertip counts as touching a cube within this distance of its faces
INSTRUCTION_TEMPLATE = "touch the {color} cube"


# Episodes start at HOME plus up to this much per arm joint (drawn from the seed): the arm's state
# then says nothing about which cube is wanted, so only the picture and the instruction do.
START_SPREAD = np.array([0.6, 0.2, 0.25, 0.25, 0.0])


def start_pose(seed: int) -> np.ndarray:
    """The arm joints (and gripper) an episode of this seed starts from."""
    rng = np.random.default_rng([seed, 1])  # a stream of its own: placements do not change with it
    pose = HOME.copy()
    pose[: len(START_SPREAD)] += rng.uniform(-START_SPREAD, START_SPREAD)
    return pose


def surface_distance(point: np.ndarray, center: np.ndarray) -> float:
    """From a point to the surface of the cube centred at `center` (0 inside)."""
    offset = np.abs(np.asarray(point) - center) - CUBE_HALF
    return float(np.linalg.norm(np.maximum(offset, 0.0)))


def instruction_for(color: str) -> str:
    return INSTRUCTION_TEMPLATE.format(color=color)


def named_object(instruction: str) -> str | None:
    """Which cube an instruction names ('touch the red cube' -> 'red'); None if none or several."""
    words = set(re.findall(r"[a-z]+", instruction.lower()))
    named = [c for c in CUBE_COLORS if c in words]
    return named[0] if len(named) == 1 else None


def _look_at(position: np.ndarray, target: np.ndarray) -> str:
    forward = (target - position) / np.linalg.norm(target - position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return " ".join(f"{v:.4f}" for v in [*right, *up])


def _scene_xml(camera_names: list[str]) -> str:
    cameras = {
        # front: facing the arm across the table; side: from its left
        "front": (np.array([0.78, 0.0, 0.5]), np.array([0.26, 0.0, 0.02])),
        "side": (np.array([0.3, 0.75, 0.55]), np.array([0.3, 0.0, 0.05])),
    }
    camera_xml = "\n".join(
        f'<camera name="{name}" pos="{" ".join(f"{v:.3f}" for v in cameras[name][0])}" '
        f'xyaxes="{_look_at(*cameras[name])}" fovy="55"/>'
        for name in camera_names
    )
    cubes = "\n".join(
        f'<body name="{color}" pos="0.3 0 {CUBE_HALF}"><geom type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" '
        f'rgba="{r} {g} {b} 1"/></body>'
        for color, (r, g, b) in CUBE_COLORS.items()
    )
    link = 'rgba="0.3 0.3 0.33 1"'
    joint = 'damping="1" limited="true"'
    return f"""
<mujoco model="evo1_sim_arm">
  <compiler angle="radian"/>
  <visual><global offwidth="640" offheight="480"/><quality shadowsize="0"/></visual>
  <worldbody>
    <light pos="0.3 0 1.5" dir="0 0 -1" diffuse="0.8 0.8 0.8"/>
    <light pos="1 0.5 1" dir="-0.6 -0.3 -0.7" diffuse="0.3 0.3 0.3"/>
    <geom name="floor" type="plane" pos="0 0 -0.75" size="3 3 0.1" rgba="0.35 0.37 0.4 1"/>
    <geom name="table" type="box" pos="0.3 0 -0.02" size="0.45 0.55 0.02" rgba="{" ".join(map(str, TABLE_COLOR))} 1"/>
    {camera_xml}
    {cubes}
    <body name="base">
      <geom type="cylinder" size="0.06 0.03" pos="0 0 0.03" rgba="0.2 0.2 0.22 1"/>
      <body name="link1" pos="0 0 0.06">
        <joint name="joint1" axis="0 0 1" range="-2.6 2.6" {joint}/>
        <geom type="cylinder" size="0.04 0.03" pos="0 0 0.03" {link}/>
        <body name="link2" pos="0 0 0.06">
          <joint name="joint2" axis="0 1 0" range="-2.0 2.0" {joint}/>
          <geom type="capsule" fromto="0 0 0 0 0 0.26" size="0.025" rgba="0.9 0.55 0.1 1"/>
          <body name="link3" pos="0 0 0.26">
            <joint name="joint3" axis="0 1 0" range="-2.0 2.0" {joint}/>
            <geom type="capsule" fromto="0 0 0 0 0 0.24" size="0.02" rgba="0.9 0.55 0.1 1"/>
            <body name="link4" pos="0 0 0.24">
              <joint name="joint4" axis="0 1 0" range="-2.0 2.0" {joint}/>
              <geom type="capsule" fromto="0 0 0 0 0 0.05" size="0.018" {link}/>
              <body name="hand" pos="0 0 0.06">
                <joint name="joint5" axis="0 0 1" range="-2.6 2.6" {joint}/>
                <geom type="box" size="0.045 0.015 0.01" {link}/>
                <body name="finger_left" pos="0 0 0.01">
                  <joint name="finger_left" type="slide" axis="1 0 0" range="0 {GRIPPER_OPENING}"/>
                  <geom type="box" pos="-0.008 0 0.035" size="0.006 0.012 0.035" rgba="0.15 0.15 0.15 1"/>
                </body>
                <body name="finger_right" pos="0 0 0.01">
                  <joint name="finger_right" type="slide" axis="-1 0 0" range="0 {GRIPPER_OPENING}"/>
                  <geom type="box" pos="0.008 0 0.035" size="0.006 0.012 0.035" rgba="0.15 0.15 0.15 1"/>
                </body>
                <site name="tip" pos="0 0 0.08" size="0.005"/>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>
  </worldbody>
</mujoco>
"""


@dataclass
class Placement:
    """Where the cubes are (name -> x, y on the table) and which one the task names."""

    cubes: dict[str, np.ndarray]
    target: str

    @property
    def instruction(self) -> str:
        return instruction_for(self.target)


def random_placement(seed: int, target: str | None = None) -> Placement:
    """Cube places drawn from `seed`: the same seed gives the same scene on every machine."""
    rng = np.random.default_rng(seed)
    names = list(CUBE_COLORS)
    while True:
        points = rng.uniform(PLACEMENT_LOW, PLACEMENT_HIGH, size=(len(names), 2))
        gaps = [np.linalg.norm(a - b) for i, a in enumerate(points) for b in points[i + 1 :]]
        if min(gaps) >= MIN_SEPARATION:
            break
    chosen = names[int(rng.integers(len(names)))]
    if target is not None:
        if target not in CUBE_COLORS:
            raise ValueError(f"unknown target {target!r}; the cubes are {names}")
        chosen = target
    return Placement(dict(zip(names, points, strict=True)), chosen)


class Scene:
    """The MuJoCo model and data, posed kinematically from joint positions (no dynamics)."""

    def __init__(self, camera_names: list[str], width: int = 224, height: int = 224):
        unknown = [c for c in camera_names if c not in ("front", "side")]
        if unknown:
            raise ValueError(f"the simulated arm has cameras 'front' and 'side', not {unknown}")
        self.model = mujoco.MjModel.from_xml_string(_scene_xml(camera_names))
        self.data = mujoco.MjData(self.model)
        self.camera_names = list(camera_names)
        self.width, self.height = width, height
        self._renderer: mujoco.Renderer | None = None
        self._arm_qpos = [self.model.joint(n).qposadr[0] for n in ARM_JOINTS]
        self._arm_dofs = [self.model.joint(n).dofadr[0] for n in ARM_JOINTS]
        self._fingers = [self.model.joint(n).qposadr[0] for n in ("finger_left", "finger_right")]
        self._tip = self.model.site("tip").id
        self.lower = self.model.jnt_range[[self.model.joint(n).id for n in ARM_JOINTS], 0].copy()
        self.upper = self.model.jnt_range[[self.model.joint(n).id for n in ARM_JOINTS], 1].copy()
        self.placement = random_placement(0)
        self.place(self.placement)
        self.pose(HOME)

    def place(self, placement: Placement) -> None:
        self.placement = placement
        for name, (x, y) in placement.cubes.items():
            self.model.body(name).pos[:] = (x, y, CUBE_HALF)
        self._update()

    def pose(self, positions: np.ndarray) -> None:
        """Set the arm joints (and the gripper, 0 closed .. 1 open, if given)."""
        positions = np.asarray(positions, dtype=np.float64)
        self.data.qpos[self._arm_qpos] = positions[: len(ARM_JOINTS)]
        if len(positions) > len(ARM_JOINTS):
            opening = float(np.clip(positions[len(ARM_JOINTS)], 0.0, 1.0)) * GRIPPER_OPENING
            self.data.qpos[self._fingers] = opening
        self._update()

    def _update(self) -> None:
        # Kinematics only (no dynamics): poses, the com quantities the Jacobians need, cameras and lights.
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)

    @property
    def tip(self) -> np.ndarray:
        return self.data.site_xpos[self._tip].copy()

    @property
    def tip_axis(self) -> np.ndarray:
        """Direction the fingers point (the tip site's z axis)."""
        return self.data.site_xmat[self._tip].reshape(3, 3)[:, 2].copy()

    def cube_center(self, name: str) -> np.ndarray:
        return self.data.xpos[self.model.body(name).id].copy()

    def tip_jacobians(self) -> tuple[np.ndarray, np.ndarray]:
        """Translational and rotational Jacobians of the tip over the five arm joints."""
        jacp = np.zeros((3, self.model.nv))
        jacr = np.zeros((3, self.model.nv))
        mujoco.mj_jacSite(self.model, self.data, jacp, jacr, self._tip)
        return jacp[:, self._arm_dofs], jacr[:, self._arm_dofs]

    def distance_to(self, name: str) -> float:
        """From the fingertip to the cube's surface (0 inside)."""
        return surface_distance(self.tip, self.cube_center(name))

    def touched(self) -> str | None:
        """The cube the fingertip touches, if any."""
        for name in self.placement.cubes:
            if self.distance_to(name) <= TOUCH_MARGIN:
                return name
        return None

    def render(self, camera: str) -> np.ndarray:
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.height, self.width)
        self._renderer.update_scene(self.data, camera)
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
