"""ROS 2 glue for Evo-1: the policy node, bring-up and the `evo1` command-line tool."""
