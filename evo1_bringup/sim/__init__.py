"""The simulated arm: a MuJoCo 5-joint arm at a table with three cubes, behaving like a real arm
stack over ROS 2 (docs/sim.md). Torch-free: a process that only runs episodes stays light.

Reading order: `scene` (the MuJoCo model, placements, the task), `follower` (how an arm follows a
JointTrajectory), `arm` (the simulator node), `expert` (the scripted demonstrator), `episodes`
(episode runner and recorder), `seeds` (the seed ranges), `evaluate` (`evo1 sim-eval` /
`sim-record`), `vqa` (questions about scenes, for stage 0) and `grounding` (`pretrain-vlm`,
`vqa-eval`, `sim-probe`; these load the model inside their functions).
"""
