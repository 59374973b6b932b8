"""The safety layer's rules as pure logic (docs/safety.md): where the arm is on a published
trajectory, how a hold stops it, how a path starts from it, which joint states are believed."""

from __future__ import annotations

import numpy as np

from evo1_bringup.safety import (
    Commanded,
    Limits,
    OutlierFilter,
    hold_point,
    off_trajectory,
    out_of_range,
    receipt_times,
    safe_path,
)
from evo1_bringup.sim.follower import TrajectoryFollower
from evo1_policy.joints import joint_velocities

DT = 0.05
LIMITS = Limits.of([-1.0, -2.0], [1.0, 2.0], [1.0, 2.0], DT)  # 0.05 and 0.1 per step


def _moving() -> Commanded:
    """Joint 0 at its velocity limit from 0, joint 1 still: 4 points, the last at rest."""
    times = np.arange(1, 5) * DT
    return Commanded(100.0, np.zeros(2), times, np.stack([times * 1.0, np.zeros(4)], axis=1))


def test_position_on_a_published_trajectory_is_interpolated_and_rests_after_the_end() -> None:
    commanded = _moving()
    np.testing.assert_allclose(commanded.position_at(100.0), [0.0, 0.0])
    np.testing.assert_allclose(commanded.position_at(100.075), [0.075, 0.0])  # half way between points 1 and 2
    np.testing.assert_allclose(commanded.velocity_at(100.075), [1.0, 0.0])
    np.testing.assert_allclose(commanded.position_at(99.0), [0.0, 0.0])  # before its start: its start
    np.testing.assert_allclose(commanded.position_at(105.0), [0.2, 0.0])  # after its end: at rest there
    np.testing.assert_allclose(commanded.velocity_at(105.0), [0.0, 0.0])
    assert commanded.end_time == 100.2


def test_between_points_the_arm_is_where_the_controller_puts_it() -> None:
    """The node's model of a running trajectory is the controller's cubic through the published
    positions and velocities, checked against the simulated controller (follower.py, written
    apart): a message that starts between two points starts from there, not from the line."""
    times = np.arange(1, 6) * DT
    points = np.array([[0.02, 0.0], [0.08, 0.1], [0.15, 0.2], [0.18, 0.2], [0.18, 0.2]])
    commanded = Commanded(100.0, np.zeros(2), times, points)
    follower = TrajectoryFollower(["a", "b"], [-1.0, -2.0], [1.0, 2.0], np.zeros(2))
    velocities = commanded.velocities
    follower.command(["a", "b"], [(t, p, v) for t, p, v in zip(times, points, velocities, strict=True)], 100.0)
    gaps = []
    for t in 100.0 + np.linspace(0.0, 0.26, 27):
        position, velocity = follower.sample(t)
        np.testing.assert_allclose(commanded.position_at(t), position, atol=1e-12)
        np.testing.assert_allclose(commanded.velocity_at(t), velocity, atol=1e-9)
        knots, path = np.concatenate([[100.0], 100.0 + times]), np.vstack([np.zeros(2), points])
        gaps.append(abs(position[0] - np.interp(t, knots, path[:, 0])))
    assert max(gaps) > 1e-3, "this path curves: the line between points is not where the arm is"


def test_a_hold_decelerates_from_where_the_arm_is_instead_of_snapping_back() -> None:
    commanded = _moving()
    stall = 100.13  # 2.6 steps after the message: the arm went on moving
    point = hold_point(commanded, stall, LIMITS)
    arm = commanded.position_at(stall)
    assert point[0] > arm[0], "the hold must not command the arm backwards"
    assert abs(point[0] - arm[0]) <= LIMITS.max_step[0] / 2 + 1e-12  # a constant deceleration over dt
    np.testing.assert_allclose(hold_point(commanded, 105.0, LIMITS), [0.2, 0.0])  # at rest: stay
    at_limit = Commanded(0.0, np.array([0.99, 0.0]), np.array([DT]), np.array([[1.0, 0.0]]))
    assert hold_point(at_limit, 0.01, LIMITS)[0] <= 1.0  # never past a limit


def test_a_path_starts_from_the_arm_and_keeps_to_the_velocity_limit_over_uneven_times() -> None:
    times = np.array([0.03, 0.08, 0.13])  # a late update: the first point is only 30 ms away
    path = safe_path(np.array([[1.0, 0.0]] * 3), np.array([0.5, 0.0]), times, LIMITS)
    np.testing.assert_allclose(path[:, 0], [0.53, 0.58, 0.63])
    # An arm reported just past a limit (within the tolerance) is brought back inside at the
    # velocity limit, not teleported onto the limit.
    path = safe_path(np.array([[1.0, 0.0]] * 3), np.array([1.12, 0.0]), np.arange(1, 4) * DT, LIMITS)
    np.testing.assert_allclose(path[:, 0], [1.07, 1.02, 1.0])


def test_joint_states_beyond_the_limits_are_implausible() -> None:
    names = ["shoulder", "elbow"]
    assert out_of_range(np.array([1.04, 0.0]), names, LIMITS, 0.05) is None
    problem = out_of_range(np.array([2.9, 1e9]), names, LIMITS, 0.05)
    assert problem is not None and "shoulder = 2.9" in problem and "elbow = 1e+09" in problem


def test_a_single_outlier_is_dropped_and_a_confirmed_jump_is_believed() -> None:
    joints = OutlierFilter(LIMITS.max_velocity, jump=0.3)
    assert joints.accept(np.array([0.16, 0.0]), 0.00) == (True, None)
    assert joints.accept(np.array([0.95, 0.0]), 0.03) == (False, None)  # a glitch between sane readings...
    accepted, dropped = joints.accept(np.array([0.17, 0.0]), 0.06)
    assert accepted and np.allclose(dropped, [0.95, 0.0])  # ...is dropped once the next one disagrees
    np.testing.assert_allclose(joints.last[0], [0.17, 0.0])
    assert joints.accept(np.array([-0.9, 1.5]), 0.09) == (False, None)  # the arm was moved (a reset)...
    assert joints.accept(np.array([-0.9, 1.5]), 0.12) == (True, None)  # ...and the next reading confirms it
    assert joints.accept(np.array([-0.8, 1.5]), 0.15) == (True, None)  # motion within the velocity limit


def _ramp(follower: TrajectoryFollower, start: float) -> None:
    """Joint a from 0 to 0.5 at 1 unit/s (0.5 s), joint b still."""
    times = np.arange(1, 11) * DT
    points = [(t, np.array([t, 0.0]), np.array([1.0 if i < 9 else 0.0, 0.0])) for i, t in enumerate(times)]
    assert follower.command(["a", "b"], points, start) == ""


def test_a_lagging_arm_trails_its_controller_by_at_most_its_cap_and_settles() -> None:
    exact = TrajectoryFollower(["a", "b"], [-1.0, -2.0], [1.0, 2.0], np.zeros(2))
    lagging = TrajectoryFollower(["a", "b"], [-1.0, -2.0], [1.0, 2.0], np.zeros(2), lag=0.05, max_tracking_error=0.04)
    for follower in (exact, lagging):
        _ramp(follower, 10.0)
    behind = []
    for t in 10.0 + np.arange(0, 101) * 0.01:
        exact.step(t)
        lagging.step(t)
        behind.append(exact.position[0] - lagging.position[0])
        np.testing.assert_allclose(lagging.measured(t)[0], lagging.position)  # at a step: what it reports
    assert 0.035 < max(behind) <= 0.04 + 1e-12, max(behind)  # about velocity x lag (0.05), capped at 0.04
    assert min(behind) >= 0.0 and abs(behind[-1]) < 1e-3  # never ahead; at rest it catches up
    assert exact.exact and not lagging.exact


def test_a_pushed_arm_is_displaced_pulled_back_and_a_new_trajectory_starts_where_it_is() -> None:
    follower = TrajectoryFollower(["a", "b"], [-1.0, -2.0], [1.0, 2.0], np.zeros(2), recovery=0.2)
    follower.step(0.0)
    follower.push(np.array([0.0, 0.5]), 0.0)  # a shove: displaced at once, then let go
    follower.step(0.0)
    np.testing.assert_allclose(follower.position, [0.0, 0.5])  # displaced at once
    follower.step(0.2)
    np.testing.assert_allclose(follower.position[1], 0.5 * np.exp(-1.0), rtol=1e-9)  # pulled back
    # The controller, in closed loop, starts the next trajectory where the arm is measured, and
    # stops pulling it toward the old one.
    where = follower.measured(0.2)[0]
    _ramp(follower, 0.2)
    follower.step(0.2)
    np.testing.assert_allclose(follower.position, where, atol=1e-12)
    follower.step(0.225)  # half way to the first point: on the controller's cubic from there
    assert 0.0 < follower.position[1] < where[1]
    follower.step(0.25)
    np.testing.assert_allclose(follower.position, [0.05, 0.0], atol=1e-12)  # the first point, no pull-back


def test_on_receipt_the_first_point_keeps_the_jitter_in_hand() -> None:
    times = np.arange(1, 4) * DT
    np.testing.assert_allclose(receipt_times(times, 0.01), times - 0.01)
    np.testing.assert_allclose(receipt_times(np.array([0.005, 0.05]), 0.01), [0.0, 0.04])
    path = safe_path(np.array([[1.0, 0.0]] * 3), np.zeros(2), receipt_times(times, 0.01), LIMITS)
    # the first point is at most max_velocity x (interval - jitter) away; later steps as before
    np.testing.assert_allclose(path[:, 0], [0.04, 0.09, 0.14])
    # so a message delivered up to one jitter later than the last, starting where the arm then is
    # (further along the old trajectory by at most max_velocity x jitter), keeps to the limit
    assert path[0, 0] + LIMITS.max_velocity[0] * 0.01 <= LIMITS.max_velocity[0] * times[0] + 1e-12


def test_an_arm_off_its_trajectory_is_named_with_the_joint_and_distance() -> None:
    names = ["shoulder", "elbow"]
    assert off_trajectory(np.array([0.1, 0.0]), np.array([0.0, 0.05]), names, 0.2) == ""
    why = off_trajectory(np.array([0.1, 0.4]), np.array([0.0, 0.05]), names, 0.2)
    assert why.startswith("elbow 0.350 off its trajectory") and "0.2" in why


def test_a_held_push_outlasts_commands_then_lets_go() -> None:
    follower = TrajectoryFollower(["a", "b"], [-1.0, -2.0], [1.0, 2.0], np.zeros(2), recovery=0.2)
    follower.step(0.0)
    follower.push(np.array([0.0, 0.5]), 0.0, duration=0.3)  # a hand holds joint b at 0.5
    _ramp(follower, 0.0)  # the controller starts from the measured arm, joint b held
    for t in (0.05, 0.15, 0.29):
        follower.step(t)
        assert follower.position[1] == 0.5 and follower.position[0] == min(t, 0.5)
    follower.step(0.3)  # let go: pulled back toward the trajectory (b at 0) from 0.5
    follower.step(0.5)
    assert 0.0 < follower.position[1] < 0.5 * np.exp(-0.5) + 0.01


def test_joint_velocities_are_taken_by_name_or_not_at_all() -> None:
    """JointState.velocity is optional: the node predicts a held arm only from velocities the
    reading really gives, for every wanted joint, finite; otherwise it compares positions only."""
    names = ["b", "a", "extra"]
    np.testing.assert_array_equal(joint_velocities(names, [2.0, 1.0, 9.0], ["a", "b"]), [1.0, 2.0])
    assert joint_velocities(names, [], ["a", "b"]) is None  # not published
    assert joint_velocities(names, [1.0, 2.0], ["a", "b"]) is None  # not one per name
    assert joint_velocities(names, [1.0, float("nan"), 0.0], ["a", "b"]) is None
    assert joint_velocities(names, [1.0, 2.0, 3.0], ["a", "c"]) is None


def test_the_controllers_cubic_never_passes_a_point_held_at_a_limit() -> None:
    """A path that reaches a joint limit and stays there: the cubic the controller draws through
    the published points (positions and their velocities) stays within the limit. Plain central
    differences gave the point before the pause a velocity that carried it ~0.01 rad past."""
    times = np.arange(1, 6) * DT
    path = np.array([[0.9, 0.0], [0.95, 0.0], [1.0, 0.0], [1.0, 0.0], [0.96, 0.0]])
    commanded = Commanded(0.0, np.array([0.85, 0.0]), times, path)
    dense = np.array([commanded.position_at(t) for t in np.linspace(0.0, times[-1], 2001)])
    assert dense[:, 0].max() <= 1.0 + 1e-12, dense[:, 0].max()
    assert np.all(np.abs(commanded.velocities) <= 3 * 0.05 / DT + 1e-12)


def test_the_nodes_model_of_the_trajectory_is_where_the_controller_has_the_arm() -> None:
    """Messages of a policy that drives a joint at its limits, sent at uneven moments: every new
    message starts where the node's model (Commanded) has the arm, and the simulated controller
    has it exactly there (they once differed by 1e-5..1e-2 rad where it clipped at the limits)."""
    limits = Limits.of([-1.0], [1.0], [2.0], DT)
    follower = TrajectoryFollower(["a"], [-1.0], [1.0], np.zeros(1))
    rng = np.random.default_rng(0)
    commanded, now, gaps = None, 100.0, []
    for _ in range(1000):
        start = commanded.position_at(now) if commanded else np.zeros(1)
        velocity = commanded.velocity_at(now) if commanded else np.zeros(1)
        gaps.append(abs(follower.sample(now)[0][0] - start[0]))
        times = np.arange(1, 11) * DT
        points = safe_path(rng.choice([-5.0, 5.0], size=(10, 1)), start, times, limits)
        commanded = Commanded(now, start, times, points, velocity)
        sent = [(t, p, v) for t, p, v in zip(times, points, commanded.velocities, strict=True)]
        assert follower.command(["a"], sent, now) == ""
        now += DT * rng.uniform(0.7, 2.5)
    assert max(gaps) < 1e-9, max(gaps)
