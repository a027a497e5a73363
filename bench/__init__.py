"""ember's benchmark suite: checkpoint save/load speed, training stall of async saves, loop overhead
and peak memory, each measured side by side with its peers in the same run.

Run ``python -m bench --help`` from the repository root.
"""
