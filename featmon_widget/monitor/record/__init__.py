"""What the monitor records from each forward: `ingest` checks and routes the features
(dense, sparse TopK, or encoded by an SAE), `recording` owns every recorded part (statistics
from `..stats`, the `history` ring, top-activating `examples`, value `histograms`, request
`positions` and `requests`, `costs`) and `registry` lists those parts with how each resets,
saves, syncs and counts its bytes. A new kind of recorded state goes here."""
