"""The typed results of the monitor's public operations: what `get_statistics`,
`get_history`, `get_top_features`, `get_examples`, `get_health`, `get_drift`, `state` and a
watch give back. Plain frozen dataclasses, independent of the wire format (`snapshot.schemas`
carries `MonitorState` inside a snapshot)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Per-feature metrics that features can be ranked by (`FeatureStatistics` fields).
METRICS = ("mean", "mean_active", "max", "min", "active_ratio", "count", "active_count", "std")


@dataclass(frozen=True)
class FeatureStatistics:
    """Statistics of one feature over every non-padding token since the last reset.

    `count` counts finite values; NaN/Inf values are in `nan_count` only. `min`, `max`, `mean`
    and `std` are None when `count` is 0; `mean_active` is None when `active_count` is 0.
    """

    feature_idx: int
    count: int
    active_count: int
    active_ratio: float | None
    mean: float | None
    mean_active: float | None
    std: float | None
    min: float | None
    max: float | None
    nan_count: int
    label: str | None = None  # what the feature means, when labels were set
    # Without a label: the most frequent tokens of its kept examples, as (text, count), best
    # first. An automatic descriptor, never a human label (None when labelled or unknown).
    top_tokens: list[tuple[str, int]] | None = None


@dataclass(frozen=True)
class ActivationRecord:
    """One token in the history.

    `activations` holds the values of the monitored (configured) features; `top_k` the token's
    strongest features above the threshold, strongest first. `token_id` is the input token when
    it was known (hooked models, or `token_ids=` given), `token` its text when a tokenizer is.
    """

    timestamp: float
    request_id: str
    row: int
    token_position: int
    activations: dict[int, float]
    top_k: list[tuple[int, float]]
    token_id: int | None = None
    token: str | None = None

    @property
    def record_id(self) -> str:
        """`request_id/row`: one sequence of one request."""
        return f"{self.request_id}/{self.row}"


@dataclass(frozen=True)
class ActivatingExample:
    """One of a feature's top-activating examples: the maximum of one sequence row of one
    forward pass, with the tokens around it.

    `token_ids` is the window of input tokens around the activating one (up to
    `context_window` each side, clipped at the sequence ends and at what was known when it was
    recorded); `index` is where the activating token is in it (-1 when its id is unknown);
    `tokens` their text when a tokenizer is known; `activations` the feature's value on each of
    them (bfloat16 precision; None for tokens of earlier forward passes, whose activations were
    not kept).
    """

    value: float
    request_id: str
    row: int
    position: int
    token_ids: list[int]
    index: int
    tokens: list[str] | None = None
    activations: list[float | None] = field(default_factory=list)

    @property
    def record_id(self) -> str:
        """`request_id/row`: the sequence it came from."""
        return f"{self.request_id}/{self.row}"


@dataclass(frozen=True)
class ExamplesResponse:
    """A feature's examples since the last reset: `kind` "top", its top-activating ones,
    highest first; "sample", a uniform random sample of its activating tokens (each a real
    activating token with its value), in the order of their random keys."""

    feature: int
    examples: list[ActivatingExample]
    label: str | None = None
    kind: str = "top"


@dataclass(frozen=True)
class ProbeText:
    """One probed text: its tokens, the probed features' value on each token, and each
    token's top features above the threshold as (feature, value), highest first."""

    text: str
    tokens: list[str | None]  # None where the tokenizer gives no text
    token_ids: list[int]
    activations: dict[int, list[float]]  # feature -> value per token
    top_features: list[list[tuple[int, float]]]  # per token
    request_id: str | None = None  # the request it was recorded as (`record=True`)


@dataclass(frozen=True)
class ProbeResponse:
    """What `FeatureMonitor.probe` saw: per text, the features at the hook point on each token
    (`sae.encode` of the layer's output), with the labels of every feature it names."""

    features: list[int]  # the features of `activations` (default: the selected ones)
    texts: list[ProbeText]
    labels: dict[int, str]
    hook_point: str
    recorded: bool  # True: each text was also recorded as its own request


@dataclass(frozen=True)
class HistoryResponse:
    """Records newest first, and how many records matched before `limit` was applied."""

    records: list[ActivationRecord]
    total: int


@dataclass(frozen=True)
class StatisticsResponse:
    """Per-feature statistics, total non-padding tokens seen and the time of the last reset.

    `total_activations` is the same count as `MonitorState.total_tokens` (the name comes from
    the original design's API and is kept for it).
    """

    features: list[FeatureStatistics]
    total_activations: int
    since: float


@dataclass(frozen=True)
class TopFeaturesResponse:
    """The k features ranked highest by `metric` (ties by lower index)."""

    metric: str
    features: list[FeatureStatistics]


@dataclass(frozen=True)
class HealthResponse:
    """Is the SAE still faithful on this traffic (definitions: `monitor.health`, README).

    `l0_mean` is exact over every token since the threshold was set; the L0 histogram
    (`l0_counts[i]`: tokens with `l0_edges[i] <= L0 < l0_edges[i + 1]`) and the reconstruction
    figures come from the sampled forwards (every `health_every`-th). None: not measured yet,
    or the SAE cannot decode.
    """

    tokens: int
    l0_mean: float | None
    l0_edges: list[int]
    l0_counts: list[int]
    dead_features: int
    ultra_rare_features: int
    rare_floor: float
    reconstruction_tokens: int
    mse: float | None
    fvu: float | None
    cosine: float | None
    sampled_forwards: int
    health_every: int


@dataclass(frozen=True)
class DriftFeature:
    """One feature's firing now against the reference (see `monitor.drift`)."""

    feature: int
    live_density: float
    reference_density: float
    log_ratio: float  # log10 of the (smoothed) live over the reference density
    z: float


@dataclass(frozen=True)
class DriftResponse:
    """The features that moved most in `direction`, and a divergence over all of them."""

    direction: str
    test: str  # which z: two-proportion (reference counts) or one-sample binomial (density)
    divergence: float  # Jensen-Shannon, bits (0..1), between the shares of firing
    live_tokens: int
    reference: str
    features: list[DriftFeature]


@dataclass(frozen=True)
class CoFiringFeature:
    """A feature that fires with a selected one, over the tokens counted since its selection.

    `both`: tokens where both are above the threshold; `active`: tokens where this feature is;
    `jaccard` = both / (tokens where either is); `lift` = both * tokens / (active of each), the
    ratio to what independent firing would give (None when undefined)."""

    feature: int
    both: int
    jaccard: float
    active: int
    lift: float | None
    label: str | None = None


@dataclass(frozen=True)
class CoFiringResponse:
    """What a selected feature fires with, ranked by Jaccard (ties to the lower index; the
    feature itself left out). Jaccard rather than `both`: the densest features would top a
    ranking by raw co-occurrence whatever the feature is about, and lift favours features seen
    once or twice; Jaccard is high only when the two fire on mostly the same tokens."""

    feature: int
    tokens: int  # tokens counted since the feature was selected (or the last reset)
    active: int  # of them, tokens where the feature fired
    features: list[CoFiringFeature]
    label: str | None = None


@dataclass(frozen=True)
class LogitToken:
    """One vocabulary token and a feature's direct effect on its logit (see `LogitsResponse`);
    `token` is its text, None without a tokenizer."""

    token_id: int
    token: str | None
    value: float


@dataclass(frozen=True)
class LogitsResponse:
    """What a feature's decoder direction promotes and suppresses: the values of
    `W_dec[feature] @ W_U` over the vocabulary (float32), without the model's final layer norm
    (the SAEDashboard / Neuronpedia convention: a direct effect on the logits, up to that
    norm's scale). `top`: the highest values, highest first; `bottom`: the lowest, lowest first
    (ties to the lower token id); `counts[i]` tokens have a value in `[edges[i], edges[i + 1])`
    (the last bin closed), equal-width bins from the lowest value to the highest, summing to the
    vocabulary size. `source` says where `W_U` came from: "set_unembedding", "W_U"
    (TransformerLens), "output embeddings" (HF) or "input embeddings (tied)" (an encoder
    without output embeddings, e.g. the demo's MiniLM)."""

    feature: int
    top: list[LogitToken]
    bottom: list[LogitToken]
    edges: list[float]
    counts: list[int]
    source: str


@dataclass(frozen=True)
class DistributionResponse:
    """A feature's activation distribution since the last reset (statistics reset or threshold
    change), every token counted (see `snapshot/value_bins.py` for the bins).

    `counts[b]` active values (above the threshold) fell in log bin b, `edges[b]` to
    `edges[b + 1]`: 31 bins, 32 edges (2^-9, then 2^e and 1.5 * 2^e for e in -8..6, then 2^7);
    bin 0 also holds every active value below 2^-8 and the last every value from 96 up.
    `inactive`: finite values at or below the threshold. `quantiles`: {0.5, 0.9, 0.99: value}
    of the active values, interpolated within the bin holding the value of rank
    floor(q (n - 1)) (so within that bin's ratio of it, at most 1.5; within 2^-8 in bin 0;
    between 96 and the feature's maximum in the last); None when no value was active. `since`:
    when counting started (seconds since the epoch)."""

    feature: int
    edges: tuple[float, ...]
    counts: tuple[int, ...]
    inactive: int
    quantiles: dict[float, float] | None
    since: float


@dataclass(frozen=True)
class WatchHit:
    """A watched feature above its threshold on one token."""

    feature: int
    value: float
    request_id: str
    row: int
    position: int
    token_id: int | None = None
    token: str | None = None


@dataclass(frozen=True)
class MonitorState:
    """Configuration, attachment, totals and errors of a monitor."""

    enabled: bool
    sae_attached: bool
    hook_attached: bool
    hook_point: str | None
    sae_id: str | None
    d_sae: int
    monitored_features: list[int] | None
    selected_features: list[int]
    history_size: int
    history_count: int
    top_k: int
    threshold: float
    throttle_ms: float
    total_tokens: int
    forward_passes: int
    since: float
    active_since: float
    device: str | None
    errors: int
    last_error: str | None
    dropped_indices: int = 0  # sparse feature indices outside 0..d_sae-1, ignored
    examples_per_feature: int = 0  # top-activating examples kept per feature (0: off)
    context_window: int = 0  # tokens kept on each side of an example
    examples_bytes: int = 0  # device memory the examples hold
    labels: int = 0  # features with a label
    delivery_errors: int = 0  # snapshot builds / subscriber callbacks that raised (isolated)
    last_delivery_error: str | None = None
    synced_ranks: int = 1  # processes whose statistics are in view (see FeatureMonitor.sync)
    synced_at: float | None = None  # when they were last synced
    records_dropped: int = 0  # history records overwritten by newer ones (the ring is full)
    monitor_ms: float | None = None  # mean time monitoring took per forward (see `costs`)
    device_bytes: int = 0  # device memory the monitor holds, all parts
    # ... per part: statistics, pending_topk (a host table on the CPU), history, histograms,
    # examples, health, watches
    memory_bytes: dict[str, int] = field(default_factory=dict)
    watch_hits: int = 0  # hits of the active watches, delivered so far
    health_every: int = 8  # every how many forwards health is sampled (0: off)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)
