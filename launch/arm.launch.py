"""Bring up the Evo-1 policy node (and, by default, the simulated arm).

    ros2 launch evo1_bringup arm.launch.py arm_config:=xarm6 checkpoint:=/path/to/ckpt sim:=false

Arguments and their defaults come from evo1_bringup.launch_args, the same list `evo1 bringup`
uses on machines without `ros2 launch`.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from evo1_bringup.arm_config import NODE_NAME
from evo1_bringup.launch_args import (
    EPISODES_EXECUTABLE,
    LAUNCH_ARGUMENTS,
    POLICY_EXECUTABLE,
    SIM_EXECUTABLE,
    parse_bool,
    policy_overrides,
)
from evo1_bringup.paths import PACKAGE, config_path
from launch import LaunchDescription


def _nodes(context, *args, **kwargs):
    value = {arg.name: LaunchConfiguration(arg.name).perform(context) for arg in LAUNCH_ARGUMENTS}
    arm_yaml = str(config_path(value["arm_config"]))
    nodes = [
        Node(
            package=PACKAGE,
            executable=POLICY_EXECUTABLE,
            name=NODE_NAME,
            namespace=value["namespace"],
            parameters=[
                arm_yaml,
                policy_overrides(value["checkpoint"], value["device"], value["dry_run"], value["compile"]),
            ],
            # SROS2: the node's keys and permissions (docs/security.md); rcl reads ROS_SECURITY_* too
            ros_arguments=["--enclave", value["enclave"]] if value["enclave"] else [],
            output="screen",
            emulate_tty=True,
        )
    ]
    if parse_bool(value["sim"]):
        nodes.append(
            Node(
                package=PACKAGE,
                executable=SIM_EXECUTABLE,
                name="evo1_sim_arm",
                namespace=value["namespace"],
                arguments=["--arm-config", arm_yaml],
                output="screen",
            )
        )
        if int(value["episodes"]) > 0:
            nodes.append(
                Node(
                    package=PACKAGE,
                    executable=EPISODES_EXECUTABLE,
                    name="evo1_sim_episodes",
                    namespace=value["namespace"],
                    arguments=["--arm-config", arm_yaml, "--episodes", value["episodes"]],
                    output="screen",
                )
            )
    return nodes


def generate_launch_description():
    return LaunchDescription(
        [
            DeclareLaunchArgument(arg.name, default_value=arg.default, description=arg.description)
            for arg in LAUNCH_ARGUMENTS
        ]
        + [OpaqueFunction(function=_nodes)]
    )
