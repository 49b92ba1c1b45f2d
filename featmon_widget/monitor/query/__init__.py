"""Reading what was recorded: `queries` (history records, statistics rows, examples),
`ranking` (stable top-k of a metric), `firing` (the shared firing summary) and `labels` (what
features mean). A new query goes here."""
