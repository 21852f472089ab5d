"""Training callbacks (rate schedules for dropout and pruning)."""
