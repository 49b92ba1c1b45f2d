"""A monitor beyond its process: `saving` (save / load, bit for bit), `exports` (SAELens
sparsity, history as a frame or Parquet), `sync` (statistics across torch.distributed ranks);
`component` is what the facade delegates them to. A new export goes here."""
