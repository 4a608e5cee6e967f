"""bottlelens workers package."""
