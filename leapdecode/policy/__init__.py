"""How much to draft and whether to: the speculation policy (speculation.py) and its parts, draft length,
the batch planner, the measured step cost and the speculation gate."""
