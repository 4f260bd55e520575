"""benchmarks: reproducible comparisons against bare baselines and peer tools (`make bench`)."""
