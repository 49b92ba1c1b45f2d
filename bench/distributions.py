"""Every feature's value distribution on and off (`FeatureMonitor(distributions=...)`); see
`part_toggle`. `python -m bench.distributions` alone; `python -m bench` prints it too."""

from .part_toggle import main

PART, OFF = "distributions", {"distributions": False}

if __name__ == "__main__":
    main(PART, OFF)
