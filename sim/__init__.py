"""The simulator: virtual instruments, virtual Modbus meters, virtual agents.

Without hardware, this is how the project proves its numbers: every
simulated instrument has a known true timeline (the ground truth) that the
measured figures can be checked against.
"""
