"""Speed, memory and quality benchmarks: each compares against a baseline in the same run."""
