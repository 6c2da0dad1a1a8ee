"""auto: the per-step choice of arm and draft length (drafter.py), its arms (arms.py), what it remembers
across requests (memory.py) and its acceptance tables (position_acceptance.py)."""
