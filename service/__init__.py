"""bottlelens service package."""
