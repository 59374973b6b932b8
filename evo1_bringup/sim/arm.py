"""A simulated arm driver for running the suite without hardware (MuJoCo, see scene.py).

It behaves like a ros2_control arm with joint_trajectory_controller: it follows
trajectory_msgs/JointTrajectory (cubic interpolation between points from positions and
velocities, a new trajectory replaces the active one from the current state, joint limits),
and publishes sensor_msgs/JointState and one image per configured camera ('front', 'side') at
30 Hz. The task: touch the cube the instruction names. `sim/start_episode` (StartEpisode) puts
the arm at a start pose near home and places the cubes, both drawn from a seed;
`sim/episode_events` (EpisodeEvent) reports the start and the end (a cube touched, or the
timeout) of every episode. Like a real arm it can trail its controller (`lag`, a first-order time
constant) and be pushed (`sim/push`, std_msgs/Float64MultiArray: a displacement per joint, held for
PUSH_SECONDS, then let go); a
controller_start of `receipt` in the arm config makes it ignore trajectory stamps.
"""

from __future__ import annotations

import collections
import time
from typing import Any

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from evo1_msgs.msg import EpisodeEvent
from evo1_msgs.srv import StartEpisode

from ..arm_config import ArmConfig
from ..ros_io import COMMAND_QOS, follow_trajectory, spin_until_signal, stamp_seconds
from .follower import PUSH_SECONDS, TrajectoryFollower
from .scene import HOME, Scene, random_placement, start_pose

EVENTS_TOPIC = "sim/episode_events"
START_SERVICE = "sim/start_episode"
PUSH_TOPIC = "sim/push"
# Reliable, and the last few kept for a late subscriber (an evaluator that starts after the sim).
EVENT_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class SimArmNode(Node):
    """The MuJoCo arm as a ROS 2 driver: JointState and camera Images at `rate_hz`, JointTrajectory
    in (arm joints and gripper), episodes started by a service and reported as EpisodeEvents."""

    def __init__(
        self,
        config: ArmConfig,
        node_name: str = "evo1_sim_arm",
        rate_hz: float = 30.0,
        seed: int = 0,
        image_size: int = 224,
        episode_timeout: float = 8.0,
        lag: float = 0.0,
        max_tracking_error: float = 0.1,
        **kwargs: Any,
    ):
        super().__init__(node_name, **kwargs)
        self.config = config
        names = config.action_names
        self.scene = Scene(list(config.cameras.names), image_size, image_size)
        self.follower = TrajectoryFollower(
            names, config.lower, config.upper, HOME[: len(names)], lag, max_tracking_error if lag > 0 else np.inf
        )
        self.on_receipt = config.control.controller_start == "receipt"
        self.scene.place(random_placement(seed))
        self.episode_timeout = episode_timeout
        self.joint_pub = self.create_publisher(JointState, config.topics.joint_states, qos_profile_sensor_data)
        self.image_pubs = [self.create_publisher(Image, t, qos_profile_sensor_data) for t in config.cameras.topics]
        self.event_pub = self.create_publisher(EpisodeEvent, EVENTS_TOPIC, EVENT_QOS)
        self.create_subscription(JointTrajectory, config.topics.trajectory, self._on_trajectory, COMMAND_QOS)
        self.create_service(StartEpisode, START_SERVICE, self._on_start_episode)
        self.create_subscription(Float64MultiArray, PUSH_TOPIC, self._on_push, 10)
        self.create_timer(1.0 / rate_hz, self._tick)
        self.trajectories = 0
        self.pushes: list[float] = []  # ROS times the arm was pushed
        self.cameras_enabled = True  # False: stop publishing images (tests of the camera watchdog)
        self.joints_enabled = True  # False: stop publishing joint states (tests of that watchdog)
        self.last_joint_time = 0.0
        self.last_image_time = 0.0
        # Where the arm really was: (ROS time, positions) per tick, when each command takes effect and
        # around a reset, for audits of what it was told (a test or a fuzzer may publish fake joint
        # states beside the real ones).
        self.arm_log: collections.deque[tuple[float, np.ndarray]] = collections.deque(maxlen=30 * 600)
        self.episode = 0
        self.episode_seed = seed
        self.running = False
        self.started_at = 0.0  # monotonic
        self.started_stamp = 0.0  # ROS time, seconds

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        stamp = stamp_seconds(msg)
        if stamp and stamp < self.started_stamp:
            # Sent before the last reset teleported the arm home: following it would undo the reset.
            self.get_logger().debug("trajectory from before the episode start ignored")
            return
        now = self.get_clock().now().nanoseconds * 1e-9
        problem, effect, where = follow_trajectory(self.follower, msg, now, self.on_receipt)
        if problem:
            self.get_logger().warning(f"trajectory rejected: {problem}")
        else:
            self.trajectories += 1
            self.arm_log.append((effect, where))  # where the arm is when this command takes effect

    def _on_push(self, msg: Float64MultiArray) -> None:
        """Displace the arm (a person, a collision); logged on both sides, like a reset."""
        offset = np.zeros(len(self.follower.names))
        values = np.asarray(msg.data, float)[: len(offset)]
        offset[: len(values)] = np.nan_to_num(values)
        now = self.get_clock().now().nanoseconds * 1e-9
        self.arm_log.append((now, self.follower.position.copy()))
        self.follower.push(offset, now, PUSH_SECONDS)
        self.follower.step(now)
        self.arm_log.append((now, self.follower.position.copy()))
        self.pushes.append(now)

    def _on_start_episode(
        self, request: StartEpisode.Request, response: StartEpisode.Response
    ) -> StartEpisode.Response:
        try:
            placement = random_placement(int(request.seed), request.target or None)
        except ValueError as error:
            response.success, response.message = False, str(error)
            return response
        if self.running:
            self._end("")  # a new start ends the running episode unscored
        before = self.follower.position.copy()
        self.follower.reset(start_pose(int(request.seed))[: len(self.follower.names)])
        reset_at = self.get_clock().now().nanoseconds * 1e-9
        self.arm_log.extend([(reset_at, before), (reset_at, self.follower.position.copy())])  # the teleport
        self.scene.place(placement)
        self.episode += 1
        self.episode_seed = int(request.seed)
        self.running = True
        self.started_at = time.monotonic()
        now = self.get_clock().now()
        self.started_stamp = now.nanoseconds * 1e-9
        self._publish_event("start", now.to_msg())
        response.success, response.message = True, f"episode {self.episode} started"
        response.episode, response.instruction, response.target = self.episode, placement.instruction, placement.target
        self.get_logger().info(f"episode {self.episode} (seed {request.seed}): {placement.instruction!r}")
        return response

    def _publish_event(self, kind: str, stamp: Any, touched: str = "") -> None:
        placement = self.scene.placement
        event = EpisodeEvent(
            episode=self.episode,
            event=kind,
            seed=self.episode_seed,
            instruction=placement.instruction,
            target=placement.target,
            object_names=list(placement.cubes),
            object_positions=[float(v) for name in placement.cubes for v in self.scene.cube_center(name)],
            tip_position=self.scene.tip.tolist(),
        )
        event.header.stamp = stamp
        if kind == "end":
            event.touched = touched
            event.success = touched == placement.target
            event.duration = time.monotonic() - self.started_at
            event.final_distance = self.scene.distance_to(placement.target)
        self.event_pub.publish(event)

    def _end(self, touched: str) -> None:
        self.running = False
        self._publish_event("end", self.get_clock().now().to_msg(), touched)
        outcome = f"touched the {touched} cube" if touched else "timed out"
        self.get_logger().info(f"episode {self.episode} ended: {outcome}")

    def _tick(self) -> None:
        ros_now = self.get_clock().now()
        self.follower.step(ros_now.nanoseconds * 1e-9)
        self.scene.pose(self.follower.position)
        if self.running:
            touched = self.scene.touched()
            if touched or time.monotonic() - self.started_at > self.episode_timeout:
                self._end(touched or "")
        now = ros_now
        stamp = now.to_msg()
        follower = self.follower
        self.arm_log.append((now.nanoseconds * 1e-9, follower.position.copy()))
        state = JointState(
            name=follower.names, position=follower.position.tolist(), velocity=follower.velocity.tolist()
        )
        state.header.stamp = stamp
        if self.joints_enabled:
            self.joint_pub.publish(state)
            self.last_joint_time = time.monotonic()
        if not self.cameras_enabled:
            return
        for name, pub in zip(self.config.cameras.names, self.image_pubs, strict=True):
            frame = self.scene.render(name)
            msg = Image(height=frame.shape[0], width=frame.shape[1], encoding="rgb8", step=frame.shape[1] * 3)
            msg.header.stamp, msg.header.frame_id = stamp, name
            msg.data = frame.tobytes()
            pub.publish(msg)
        self.last_image_time = time.monotonic()

    def destroy_node(self) -> None:
        self.scene.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Simulated arm for the Evo-1 suite")
    parser.add_argument("--arm-config", default="sim_arm")
    parser.add_argument("--seed", type=int, default=0, help="placement of the cubes before the first episode")
    parser.add_argument("--episode-timeout", type=float, default=8.0, help="seconds before an episode ends unscored")
    parser.add_argument("--lag", type=float, default=0.0, help="the arm trails its controller (time constant, s)")
    known, ros_args = parser.parse_known_args(args)
    config = ArmConfig.named(known.arm_config)
    with rclpy.init(args=ros_args, signal_handler_options=SignalHandlerOptions.NO):
        node = SimArmNode(config, seed=known.seed, episode_timeout=known.episode_timeout, lag=known.lag)
        spin_until_signal([node])
        node.destroy_node()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
