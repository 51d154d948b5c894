"""Speed and memory benchmarks: `python -m benchmarks [name ...]` prints a table per benchmark."""
