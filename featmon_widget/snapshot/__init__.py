"""What the monitor hands out: the typed results of its operations (`schemas`) and the bounded
`Snapshot` for the frontend, built from a `SnapshotSource` in two steps (enqueue device work under
the lock, read it back after), plus a static plotly figure of a snapshot."""
