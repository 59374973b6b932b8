"""Demonstration data: episodes from ROS 2 bags and LeRobot datasets, training windows, augmentation."""
