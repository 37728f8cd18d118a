"""Canary rollouts: the decisions (start, advance, promote, rollback), their store and their statistical gates."""
