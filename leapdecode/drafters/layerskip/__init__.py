"""layerskip: self-speculation by skipping the target's own layers (drafter.py), the skip set (skip_layers.py),
its search (search.py) and the searched sets cached per model (store.py)."""
