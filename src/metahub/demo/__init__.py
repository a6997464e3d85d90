"""Demo content: the seed qnib/bench images used to show feature-based selection."""
