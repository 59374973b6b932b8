"""The recorder node behind `evo1 record`: the arm config's topics in, as serialized bytes.

Each camera, the joint states and the operator's commands are subscribed raw: a message's
bytes go into the episode's bag as they came off the wire, never decoded and encoded again
(that is what keeps three 640x480 cameras at 30 Hz under a core). Its time is its header
stamp (read from the bytes; the receipt time where the stamp is zero), as bag2dataset reads it.
The node also counts every stream (rate, frames, gaps) for the live line and the checks, offers
the controls as services (`~/start_episode`, ...: evo1_msgs/RecordControl) and publishes an
EpisodeEvent at each boundary on `~/episode_events`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import partial
from itertools import pairwise

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from evo1_msgs.msg import EpisodeEvent
from evo1_msgs.srv import RecordControl

from ..arm_config import ArmConfig
from ..ros_io import COMMAND_QOS
from .episode_bag import EpisodeBag, Stream, header_stamp_ns

RECORDER_NODE = "evo1_recorder"
CONTROLS = (
    "start_episode",
    "stop_episode",
    "rerecord",
    "mark_success",
    "mark_failure",
    "finish",
    "takeover",
    "release",
)
INSTRUCTION_KEY = "instruction"
# Best effort like the drivers' sensor data, but a deeper queue: while an episode's bag is being
# opened or closed (tens of ms), messages wait instead of being overwritten.
RECORD_SENSOR_QOS = QoSProfile(
    depth=100, reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE
)
RATE_WINDOW = 2.0  # seconds of receipts a rate is measured over
GAP_FACTOR = 1.8  # a camera interval this many periods long means frames were lost on the way

# (control, task, start stamp or 0) -> (accepted, message, episode)
ControlHandler = Callable[[str, str, float], tuple[bool, str, int]]

_TYPES = {
    "sensor_msgs/msg/Image": Image,
    "sensor_msgs/msg/CompressedImage": CompressedImage,
    "sensor_msgs/msg/JointState": JointState,
    "trajectory_msgs/msg/JointTrajectory": JointTrajectory,
}


def arm_streams(config: ArmConfig) -> list[Stream]:
    """What an episode of this arm holds: each camera, the joint states, the operator's commands
    (record.command_topic, else the trajectory topic) and the task text on the instruction topic."""
    streams = [
        Stream(f"camera_{name}", topic, "sensor_msgs/msg/" + ("CompressedImage" if compressed else "Image"))
        for name, topic, compressed in zip(
            config.cameras.names, config.cameras.topics, config.cameras.compressed, strict=True
        )
    ]
    command_type = {"trajectory": "trajectory_msgs/msg/JointTrajectory", "joint_state": "sensor_msgs/msg/JointState"}
    streams.append(Stream("joint_states", config.topics.joint_states, "sensor_msgs/msg/JointState"))
    streams.append(Stream("commands", config.command_topic, command_type[config.record.command_type]))
    streams.append(Stream(INSTRUCTION_KEY, config.topics.instruction, "std_msgs/msg/String"))
    return streams


class StreamStats:
    """Counts of one subscribed stream: messages, rate over the last seconds, gaps, clock offset."""

    def __init__(self, is_camera: bool):
        self.is_camera = is_camera
        self.count = 0
        self.receipts: deque[float] = deque(maxlen=512)
        self.stamps: deque[float] = deque(maxlen=32)
        self.dropped = 0  # camera frames missing between stamps (gaps of GAP_FACTOR periods or more)
        self.clock_offset = 0.0  # last header stamp minus the receipt time on our clock
        self.latest: bytes | None = None  # the last message's bytes (the checks decode one)

    def add(self, stamp: float, now: float, raw: bytes) -> None:
        if self.is_camera and self.stamps:
            period = self.period()
            gap = stamp - self.stamps[-1]
            if period > 0 and gap >= GAP_FACTOR * period:
                self.dropped += round(gap / period) - 1
        self.count += 1
        self.receipts.append(now)
        self.stamps.append(stamp)
        self.clock_offset = stamp - now
        self.latest = raw

    def period(self) -> float:
        """The typical interval between stamps (median of the recent ones), 0 before two."""
        times = list(self.stamps)
        if len(times) < 2:
            return 0.0
        intervals = sorted(b - a for a, b in pairwise(times))
        return intervals[len(intervals) // 2]

    def rate(self, now: float) -> float:
        recent = [t for t in self.receipts if t >= now - RATE_WINDOW]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)


class RecorderNode(Node):
    def __init__(
        self,
        config: ArmConfig,
        streams: list[Stream],
        on_control: ControlHandler,
        node_name: str = RECORDER_NODE,
        pre_roll: float = 0.0,
    ):
        super().__init__(node_name)
        self.config = config
        self.pre_roll = pre_roll  # seconds of messages kept, for a start from a stamp just past
        self.recent: deque[tuple[int, str, bytes]] = deque()  # (stamp ns, key, message)
        self.streams = {s.key: s for s in streams}
        self.stats = {s.key: StreamStats(s.key.startswith("camera_")) for s in streams if s.key != INSTRUCTION_KEY}
        self.bag: EpisodeBag | None = None
        self.bag_start_ns = 0  # stamps before this belong to the time before the episode
        for stream in streams:
            if stream.key == INSTRUCTION_KEY:
                continue  # the task text is ours: written into the bag, not recorded
            # A reliable subscription would miss best-effort cameras; trajectories are reliable
            # by contract (joint_trajectory_controller subscribes reliably).
            qos = COMMAND_QOS if stream.msgtype.startswith("trajectory_msgs") else RECORD_SENSOR_QOS
            callback = partial(self._on_message, stream.key)
            self.create_subscription(_TYPES[stream.msgtype], stream.topic, callback, qos, raw=True)
        self.on_control = on_control
        self.event_pub = self.create_publisher(EpisodeEvent, "~/episode_events", 10)

    def offer_controls(self) -> None:
        """The control services, offered once the checks have passed: a client that sees them
        ready knows the recorder is recording-ready (a start during the checks would be lost)."""
        for control in CONTROLS:
            self.create_service(RecordControl, f"~/{control}", partial(self._on_control, control, self.on_control))

    def now(self) -> float:
        """Seconds on this node's ROS clock (sim time under use_sim_time), the stamps' clock."""
        return self.get_clock().now().nanoseconds * 1e-9

    def now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_message(self, key: str, raw: bytes) -> None:
        now_ns = self.now_ns()
        stamp_ns = header_stamp_ns(raw) or now_ns  # a zero stamp: "now" (a trajectory that starts on receipt)
        self.stats[key].add(stamp_ns * 1e-9, now_ns * 1e-9, raw)
        if self.bag is not None:
            if stamp_ns >= self.bag_start_ns:
                self.bag.write(key, stamp_ns, raw)
        elif self.pre_roll > 0:
            self.recent.append((stamp_ns, key, raw))
            while self.recent and self.recent[0][0] < now_ns - self.pre_roll * 1e9:
                self.recent.popleft()

    def start_bag(self, bag: EpisodeBag, task: str, since: float = 0.0) -> int:
        """Record into `bag` from `since` (a stamp at most pre_roll seconds back; 0: now): the task
        text first, stamped then, and the kept messages from then on. Returns the start (ns)."""
        now_ns = self.now_ns()
        start_ns = now_ns
        if since:
            start_ns = min(max(round(since * 1e9), now_ns - round(self.pre_roll * 1e9)), now_ns)
        self.bag_start_ns = start_ns
        self.bag = bag
        bag.write(INSTRUCTION_KEY, start_ns, serialize_message(String(data=task)))
        for stamp_ns, key, raw in sorted(self.recent, key=lambda item: item[0]):
            if stamp_ns >= start_ns:
                bag.write(key, stamp_ns, raw)
        self.recent.clear()
        return start_ns

    def take_bag(self) -> EpisodeBag | None:
        """Stop recording; the caller finishes or discards what was written."""
        bag, self.bag = self.bag, None
        return bag

    def _on_control(
        self, control: str, handler: ControlHandler, request: RecordControl.Request, response: RecordControl.Response
    ) -> RecordControl.Response:
        since = request.start.sec + request.start.nanosec * 1e-9
        response.success, response.message, response.episode = handler(control, request.task, since)
        return response

    def publish_event(self, event: str, episode: int, task: str, success: bool = False, duration: float = 0.0) -> None:
        msg = EpisodeEvent(event=event, episode=episode, instruction=task, success=success, duration=duration)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.event_pub.publish(msg)
