"""A stand-in for DROID's package (github.com/droid-dataset/droid) at the robot boundary, for tests only.

It has DROID's module layout and the parts of ``RobotEnv``'s interface the arena's adapter uses, checks actions
as ``RobotEnv.step`` does, and records every env built and every action stepped (``droid.robot_env.ENVS``).
"""
