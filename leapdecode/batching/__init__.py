"""Many requests in one forward: the scheduler (admit, propose, plan, forward, settle) and batched drafting."""
