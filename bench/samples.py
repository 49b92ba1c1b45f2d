"""The sample of activating tokens (2 a feature by default) on and off
(`samples_per_feature=0`); see `part_toggle`. `python -m bench.samples` alone; `python -m
bench` prints it too."""

from .part_toggle import main

PART, OFF = "samples", {"samples_per_feature": 0}

if __name__ == "__main__":
    main(PART, OFF)
