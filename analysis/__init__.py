"""bottlelens analysis library: pure torch, usable from a notebook."""
