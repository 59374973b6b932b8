"""Operator takeovers while the policy runs (`evo1 record --takeovers`), for DAgger-style data.

A takeover puts the policy node into dry run (its `safety.dry_run` parameter, set over the
parameter services): the node holds the arm where it is and stops commanding it, and the
operator's commands (on the arm's trajectory topic, `record.command_topic` empty) move the arm.
A release switches dry run off: the node restarts from where the arm is measured. So the node's
own rules hold at both edges, and the trajectory topic carries, in one stream, whatever moved the
arm: the policy's commands outside the spans, the operator's inside. The spans start when the node
has confirmed the switch and end when the release is sent; they go into each episode's metadata
(`evo1.takeovers`, nanoseconds on the stamps' clock), and `evo1 train` can select or weight them
(`data.takeovers`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient

DRY_RUN = "safety.dry_run"


class Takeover:
    def __init__(self, node: Node, policy_node: str, now_ns: Callable[[], int]):
        self.client = AsyncParameterClient(node, policy_node)
        self.policy_node = policy_node
        self.now_ns = now_ns
        self.spans: list[list[int]] = []  # [start, end] ns; end 0 while it lasts
        self.pending = False

    @property
    def active(self) -> bool:
        return bool(self.spans) and self.spans[-1][1] == 0

    def switch(self, take: bool, say: Callable[[str], None], announce: Callable[[str], None]) -> tuple[bool, str]:
        """Ask the policy node for dry run on (take) or off; the span opens on its confirmation."""
        if self.pending:
            return False, "a takeover switch is still waiting for the policy node's answer"
        if take == self.active:
            return False, "the operator has the arm already" if take else "the policy has the arm already"
        if not self.client.services_are_ready():
            return False, f"no policy node {self.policy_node!r} answers on its parameter services"
        if not take:  # the operator's span ends now; the node restarts from the arm when it answers
            self.spans[-1][1] = self.now_ns()
        self.pending = True
        future = self.client.set_parameters([Parameter(DRY_RUN, value=take)])
        future.add_done_callback(lambda done: self._answered(done, take, say, announce))
        return True, "takeover requested: the policy node holds the arm" if take else "release requested"

    def _answered(self, future: Any, take: bool, say: Callable[[str], None], announce: Callable[[str], None]) -> None:
        self.pending = False
        response = future.result()
        results = getattr(response, "results", [])
        if not results or not results[0].successful:
            reason = results[0].reason if results else "no answer"
            say(f"the policy node refused {DRY_RUN}={take}: {reason}")
            if not take:  # still in dry run: the operator keeps the arm
                self.spans.append([self.now_ns(), 0])
            return
        if take:
            self.spans.append([self.now_ns(), 0])
            say("takeover: the operator has the arm (the policy node is in dry run)")
        else:
            say("released: the policy node restarts from where the arm is")
        announce("takeover" if take else "release")

    def within(self, start_ns: int, end_ns: int) -> list[list[int]]:
        """The spans clipped to [start, end] (an open one ends at `end`)."""
        clipped = []
        for begin, finish in self.spans:
            finish = finish or end_ns
            if finish > start_ns and begin < end_ns:
                clipped.append([max(begin, start_ns), min(finish, end_ns)])
        return clipped
