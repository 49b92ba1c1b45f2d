"""Hypothesis against the real server: random bodies and query strings on every route that
takes input. No answer is a 5xx, every 4xx is a JSON message naming what was wrong, and a
rejected request changes nothing."""

import json

import httpx
import pytest
from conftest import api_client, fingerprint, recorded_monitor
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

FIELDS = ["enabled", "features", "history_size", "top_k", "threshold", "throttle_ms",
          "selected", "examples_per_feature", "context_window", "health_every", "k", "metric",
          "limit", "request_id", "row", "direction", "table_rows", "records", "search",
          "token", "rare_floor", "d_sae", "kind", "texts", "record", "samples_per_feature"]
NUMBERS = st.one_of(st.integers(-3, 300), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.sampled_from([0, 1, 63, 64, 255, 256, 1000, 100_001, -0.0, 1e308]))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS,
                    st.text(max_size=12), st.sampled_from(["mean", "max", "hot", "cold", "1,2",
                                                           "alpha", "alpha/0", "", "nan"]))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=6), st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=5),
                                                 inner, max_size=4)), max_leaves=12)
BODIES = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=4).map(json.dumps),
    JSON.map(json.dumps),
    st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
    st.sampled_from(['{"history_size": NaN}', '{"k": Infinity}', "{", "[1,", '{"a":1}{}',
                     '{"features": [1, 2, 1]}', '{"enabled": "true"}', '{"k": 1e400}']),
)
QUERY_VALUE = st.one_of(SCALARS.map(lambda v: "" if v is None else str(v)),
                        st.text(max_size=20))
QUERIES = st.lists(st.tuples(st.sampled_from(FIELDS) | st.text(max_size=6), QUERY_VALUE),
                   max_size=5)
POSTS = ["/configure", "/enable", "/statistics/top", "/probe"]
GETS = ["", "/", "/history", "/history/", "/statistics", "/health", "/drift", "/snapshot",
        "/examples/3", "/distribution/3", "/cofiring/3", "/logits/3"]
PER_FEATURE = ["/examples/", "/distribution/", "/cofiring/", "/logits/"]
PATHS = st.one_of(st.sampled_from(GETS), st.tuples(st.sampled_from(PER_FEATURE),
                                                   st.text(max_size=8)).map("".join))

REQUESTS = st.one_of(
    st.tuples(st.just("POST"), st.sampled_from(POSTS), BODIES, QUERIES),
    st.tuples(st.just("GET"), PATHS, st.none(), QUERIES),
    st.tuples(st.just("DELETE"), st.sampled_from(["/history", "/statistics", "/configure"]),
              st.none(), QUERIES),
)


@pytest.fixture(scope="module")
def served():
    monitor = recorded_monitor()
    with monitor.serve(quiet=True) as server, api_client(server) as client:
        yield monitor, client
    monitor.close()


@settings(max_examples=2000, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=REQUESTS)
def test_random_requests_never_fail_and_rejections_change_nothing(served, request):
    monitor, client = served
    method, path, body, query = request
    before = fingerprint(monitor)
    try:
        response = client.request(method, path, params=query, content=body,
                                  headers={"Content-Type": "application/json"})
    except httpx.InvalidURL:
        return  # httpx refuses to send it (a control character in the path): nothing sent
    assert response.status_code < 500, (request, response.text)
    event(f"{method} {response.status_code}")  # --hypothesis-show-statistics tallies them
    if response.status_code >= 400:
        answer = response.json()
        assert isinstance(answer["detail"], str) and answer["detail"], answer
        assert fingerprint(monitor) == before, (request, answer)
    else:
        response.json()
