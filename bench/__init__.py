"""Side-by-side benchmarks of featmon_widget; run with `python -m bench`."""
