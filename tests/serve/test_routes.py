"""Every route answers what the Python API answers for the same state, in the original's
field names, in the shape its schema documents."""

import math

import pytest
import torch
from conftest import D_SAE

from featmon_widget.serve import schemas, wire

ORIGINAL_STATE = {"enabled", "sae_attached", "sae_id", "monitored_features", "history_size",
                  "history_count"}
ORIGINAL_STATS = {"feature_idx", "count", "mean", "std", "min", "max", "active_ratio"}
ORIGINAL_RECORD = {"timestamp", "request_id", "token_position", "activations", "top_k"}


def test_state(http, monitor):
    body = http.get("").json()
    assert set(body) >= ORIGINAL_STATE
    assert body == wire.jsonable(monitor.state) | {"monitor_ms": body["monitor_ms"]}
    schemas.MonitorState.model_validate(body)


@pytest.mark.parametrize("query, args", [
    ({}, {}), ({"limit": 3}, {"limit": 3}), ({"request_id": "alpha"}, {"request_id": "alpha"}),
    ({"request_id": "alpha/1"}, {"request_id": "alpha/1"}),
    ({"request_id": "alpha", "row": 0, "limit": 2}, {"request_id": "alpha", "row": 0,
                                                     "limit": 2}),
    ({"request_id": "nobody"}, {"request_id": "nobody"}),
])
def test_history(http, monitor, query, args):
    body = http.get("/history", params=query).json()
    assert set(body) == {"records", "total"}
    expected = monitor.get_history(**args)
    assert body == wire.jsonable(expected)
    assert wire.history_from(body) == expected
    for record in body["records"]:
        assert set(record) >= ORIGINAL_RECORD
    schemas.HistoryResponse.model_validate(body)


def test_history_records_every_token_with_its_real_position(http):
    body = http.get("/history", params={"request_id": "beta", "limit": 100}).json()
    assert sorted(r["token_position"] for r in body["records"]) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("query, features", [
    ({}, None), ({"features": "1,2,3"}, [1, 2, 3]), ({"features": ["5", "7"]}, [5, 7]),
    ({"features": str(D_SAE - 1)}, [D_SAE - 1]),
])
def test_statistics(http, monitor, query, features):
    body = http.get("/statistics", params=query).json()
    assert set(body) == {"features", "total_activations", "since"}
    expected = monitor.get_statistics(features)
    assert body == wire.jsonable(expected)
    assert wire.statistics_response_from(body) == expected
    assert all(set(row) >= ORIGINAL_STATS for row in body["features"])
    assert body["total_activations"] == 20
    schemas.StatisticsResponse.model_validate(body)


def test_statistics_are_exact_not_the_originals_cancellation(http, monitor):
    """The original's variance cancelled catastrophically; ours matches float64."""
    monitor.reset_statistics()
    acts = torch.zeros(1, 1000, D_SAE)
    acts[..., 0] = 1e6 + torch.arange(1000, dtype=torch.float32) % 3
    monitor.on_activation(acts)
    row = http.get("/statistics", params={"features": "0,1"}).json()["features"]
    ref = acts[0, :, 0].double()
    assert row[0]["std"] == pytest.approx(ref.std().item(), rel=1e-9)
    assert row[0]["active_ratio"] == 1.0 and row[1]["active_ratio"] == 0.0
    assert row[1]["min"] == 0.0 and row[1]["max"] == 0.0


def test_an_empty_feature_has_no_made_up_min_max(http, monitor):
    monitor.reset_statistics()
    row = http.get("/statistics", params={"features": "4"}).json()["features"][0]
    assert row["count"] == 0 and row["min"] is None and row["max"] is None


@pytest.mark.parametrize("body", [{}, {"k": 3}, {"k": 5, "metric": "max"},
                                  {"k": 64, "metric": "active_ratio"},
                                  {"metric": "count"}, {"k": 2, "metric": "mean_active"}])
def test_top_features(http, monitor, body):
    answer = http.post("/statistics/top", json=body).json()
    expected = monitor.get_top_features(**body)
    assert answer["k"] == body.get("k", 10) and answer["metric"] == expected.metric
    assert wire.top_from(answer) == expected
    schemas.TopFeaturesResponse.model_validate(answer)


def test_configure_changes_only_what_is_sent(http, monitor):
    before = monitor.config
    answer = http.post("/configure", json={"features": [3, 1, 2]}).json()
    assert answer["monitored_features"] == [3, 1, 2]
    assert answer["history_size"] == before.history_size  # the original reset it to 100
    assert answer == wire.jsonable(monitor.state) | {"monitor_ms": answer["monitor_ms"]}
    answer = http.post("/configure", json={"features": None, "history_size": 7,
                                           "threshold": 0.5}).json()
    assert answer["monitored_features"] is None and answer["history_size"] == 7
    assert monitor.config.threshold == 0.5 and monitor.config.top_k == before.top_k


def test_enable_pauses_and_keeps_everything(http, monitor):
    before = monitor.get_statistics()
    assert http.post("/enable", json={"enabled": False}).json()["enabled"] is False
    monitor.on_activation(torch.rand(2, D_SAE))
    assert monitor.get_statistics() == before
    assert http.post("/enable", json={"enabled": True}).json()["enabled"] is True


def test_clear_history_and_reset_statistics(http, monitor):
    held = monitor.state.history_count
    assert http.delete("/history").json() == {"cleared": held,
                                              "message": f"cleared {held} history records"}
    assert monitor.state.history_count == 0 and monitor.state.total_tokens == 20
    answer = http.delete("/statistics").json()
    assert answer["cleared"] == D_SAE and set(answer) == {"cleared", "message"}
    assert monitor.state.total_tokens == 0


def test_newer_reads(http, monitor):
    assert wire.health_from(http.get("/health").json()) == monitor.get_health()
    schemas.HealthResponse.model_validate(http.get("/health").json())
    feature = monitor.get_top_features(1).features[0].feature_idx
    body = http.get(f"/examples/{feature}", params={"k": 2}).json()
    assert wire.examples_from(body) == monitor.get_examples(feature, 2)
    schemas.ExamplesResponse.model_validate(body)
    body = http.get(f"/examples/{feature}", params={"kind": "sample"}).json()
    assert body["kind"] == "sample" and body["examples"]
    assert wire.examples_from(body) == monitor.get_examples(feature, kind="sample")
    schemas.ExamplesResponse.model_validate(body)
    bad = http.get(f"/examples/{feature}", params={"kind": "best"})
    assert bad.status_code == 422 and "best" in str(bad.json()["detail"])
    drift = http.get("/drift")
    assert drift.status_code == 409 and "reference" in drift.json()["detail"]
    monitor.set_reference(monitor)
    body = http.get("/drift", params={"k": 3, "direction": "cold"}).json()
    assert wire.drift_from(body) == monitor.get_drift(3, "cold")


def test_cofiring_is_served_as_the_monitor_answers(http, monitor):
    monitor.configure(selected=[1, 2])
    monitor.on_activation(torch.relu(torch.randn(4, 8, D_SAE,
                                                 generator=torch.Generator().manual_seed(3))))
    body = http.get("/cofiring/1", params={"k": 4}).json()
    assert wire.cofiring_from(body) == monitor.get_cofiring(1, 4)
    assert body["features"] and body["tokens"] == 32
    unselected = http.get("/cofiring/7")
    assert unselected.status_code == 422 and "7" in unselected.json()["detail"]


def test_snapshot_round_trips(http, monitor):
    body = http.get("/snapshot", params={"table_rows": 5, "records": 3}).json()
    snap = wire.snapshot_from(body)
    local = monitor.snapshot(5, "mean", 3)
    assert snap.table_features == local.table_features
    assert snap.table_columns == local.table_columns and snap.records == local.records
    assert snap.state.total_tokens == local.state.total_tokens


def test_non_finite_values_are_served_as_null_never_a_500(http, monitor):
    monitor.configure(features=[0, 1])
    acts = torch.zeros(1, 2, D_SAE)
    acts[0, 0, 0] = math.nan
    acts[0, 1, 1] = math.inf
    monitor.on_activation(acts)
    for path in ("", "/history", "/statistics", "/snapshot", "/health"):
        response = http.get(path)
        assert response.status_code == 200, path
    assert http.post("/statistics/top", json={"metric": "max"}).status_code == 200


def test_openapi_and_offline_docs(server):
    import httpx

    spec = httpx.get(server.url + "/openapi.json").json()
    for path, method in [("", "get"), ("/configure", "post"), ("/enable", "post"),
                         ("/history", "get"), ("/history", "delete"), ("/statistics", "get"),
                         ("/statistics", "delete"), ("/statistics/top", "post")]:
        assert method in spec["paths"]["/api/monitoring" + path]
    page = httpx.get(server.url + "/docs").text
    assert "/api/monitoring/statistics/top" in page and "MonitorState" in page
    assert "http://" not in page and "https://" not in page  # no CDN, nothing fetched


def test_unknown_paths_and_methods_are_json_errors(http):
    for method, path, status in [("GET", "/", 404), ("GET", "/history/", 404),
                                 ("GET", "/nothing", 404), ("PUT", "/history", 405),
                                 ("GET", "/configure", 405)]:
        response = http.request(method, path)
        assert response.status_code == status, (method, path)
        assert response.json()["detail"]


def test_newer_reads_are_served_when_the_monitor_has_them(monitor):
    import dataclasses

    import httpx

    @dataclasses.dataclass(frozen=True)
    class Distribution:
        feature: int
        counts: list[int]

    class Newer:  # a monitor with the reads other features add
        def __getattr__(self, name):
            return getattr(monitor, name)

        def get_distribution(self, feature):
            if not 0 <= feature < 64:
                raise ValueError(f"feature must be in 0..63, got {feature}")
            return Distribution(feature, [1, 2])

        def get_cofiring(self, feature, k=10):
            return {"feature": feature, "k": k}

        def get_logits(self, feature, k=10):
            return {"feature": feature, "k": k}

        def probe(self, texts, record=False, features=None, k=5):
            return {"texts": texts, "record": record, "k": k}

    newer = ("get_distribution", "get_cofiring", "get_logits", "probe")

    class Older:  # a monitor from before those reads
        def __getattr__(self, name):
            if name in newer:
                raise AttributeError(name)
            return getattr(monitor, name)

    from featmon_widget.serve.server import MonitorServer

    with MonitorServer(Older(), quiet=True) as plain:
        spec = httpx.get(plain.url + "/openapi.json").json()["paths"]
        assert not any(p.startswith(("/api/monitoring/distribution", "/api/monitoring/probe",
                                     "/api/monitoring/cofiring", "/api/monitoring/logits"))
                       for p in spec)

    with MonitorServer(Newer(), quiet=True) as s:
        from conftest import api_client

        with api_client(s) as c:
            assert c.get("/distribution/3").json() == {"feature": 3, "counts": [1, 2]}
            bad = c.get("/distribution/99")
            assert bad.status_code == 422 and bad.json()["field"] == "feature"
            assert c.get("/cofiring/2", params={"k": 4}).json() == {"feature": 2, "k": 4}
            assert c.get("/logits/2").json() == {"feature": 2, "k": 10}
            assert c.post("/probe", json={"texts": ["a b"]}).json()["k"] == 5
            assert c.post("/probe", json={"texts": 3}).status_code == 422


def test_logits_of_a_real_monitor(monitor):
    """`/logits/{feature}` is registered for a real monitor and answers its `get_logits`;
    RemoteMonitor.get_logits gives the same response back."""
    from conftest import api_client

    from featmon_widget import SparseAutoencoder
    from featmon_widget.serve import RemoteMonitor

    with monitor.serve(quiet=True) as s, api_client(s) as c:
        missing = c.get("/logits/3")  # no SAE yet: a clear rejection, not a 500
        assert missing.status_code == 422 and "needs an SAE" in missing.json()["detail"]
        g = torch.Generator().manual_seed(4)
        monitor.sae = SparseAutoencoder.from_tensors(
            torch.randn(8, D_SAE, generator=g), torch.zeros(D_SAE),
            torch.randn(D_SAE, 8, generator=g), torch.zeros(8))
        monitor.set_unembedding(torch.randn(8, 40, generator=g))
        body = c.get("/logits/3", params={"k": 4}).json()
        assert wire.logits_from(body) == monitor.get_logits(3, 4)
        assert body["source"] == "set_unembedding" and len(body["top"]) == 4
        for path, params, field in (("/logits/64", {}, "feature"), ("/logits/3", {"k": 0}, "k"),
                                    ("/logits/3", {"k": 101}, "k")):
            bad = c.get(path, params=params)
            assert bad.status_code == 422 and bad.json()["field"] == field
        with RemoteMonitor(s.url, token=s.token) as remote:
            assert remote.get_logits(5, k=3) == monitor.get_logits(5, k=3)
            with pytest.raises(ValueError, match="k must be in 1..100"):
                remote.get_logits(5, k=0)


def test_distribution_route_returns_the_monitors_distribution(http, monitor):
    monitor.on_activation(torch.rand(4, D_SAE))
    want = monitor.get_distribution(2)
    got = http.get("/distribution/2").json()
    assert got["counts"] == list(want.counts) and got["inactive"] == want.inactive
    assert got["feature"] == 2 and len(got["edges"]) == 32
