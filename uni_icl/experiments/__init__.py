"""Named experiments: each trains-or-loads its learners at a preset and returns result tables."""
