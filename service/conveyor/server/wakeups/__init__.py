"""Lease wake-ups: tasks became ready in a queue, so the idle workers waiting on it look again."""
