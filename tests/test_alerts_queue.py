"""The alert outbox and `meltrca queue` delivery: JSON lines and a real webhook server on 127.0.0.1.

The webhook receiver counts accepted (2xx) deliveries per dedup key. Through a sink that is
down, then flapping, then answering 500, then up, every alert must arrive exactly once, and a
further run must send nothing. A lost acknowledgement (the receiver accepted but answered too
late) shows the documented at-least-once behaviour: one duplicate, detectable by its key.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime

import pytest
from pyspark.sql import functions as F

from meltrca.alerts import data_horizons, outbox_rows
from meltrca.errors import ConfigError, MeltrcaError
from meltrca.schemas import INCIDENTS
from meltrca.stages import queue
from test_explain_lake import make_ctx
from test_llm_server import Reply, ScriptedServer, free_port

DAY = datetime(2024, 9, 26).date()


def incident(iid: str, start_min: int, end_min: int, severity: str = "high"):
    start, end = datetime(2024, 9, 26, 10, start_min), datetime(2024, 9, 26, 10, end_min)
    return ("shop", iid, start, end, ["api", "db"], ["0" * 16], [("db", 0.9, 1, "conn_pool_usage_mean", "pool")],
            [("db", start, 0.0)], severity, f"db pool exhausted ({iid})", "template", "rca-1", DAY)


@pytest.fixture
def outbox(spark, lake, settings):
    """Five pending alerts: three incidents opened, the two ended ones also resolved (data runs to 10:59)."""
    incidents = spark.createDataFrame([incident("1" * 16, 0, 10), incident("2" * 16, 20, 30),
                                       incident("3" * 16, 50, 58)], INCIDENTS)
    horizon = spark.createDataFrame([("shop", datetime(2024, 9, 26, 10, 59))], "system string, t timestamp")
    rows = outbox_rows(incidents, lake.empty("alerts"), data_horizons((horizon, "t")), resolve_after_minutes=15,
                       created_at=datetime(2024, 9, 26, 11, 0))
    lake.insert_new("alerts", rows, keys=["alert_id"])
    return sorted((r["incident_id"], r["event"], r["dedup_key"]) for r in lake.read("alerts").collect())


def fast(settings, **extra):
    over = {"alerts.max_attempts": 3, "alerts.backoff_seconds": 0.01, "alerts.timeout_seconds": 0.5,
            "alerts.commit_every": 2}
    over.update(extra)
    return settings.with_overrides(over)


def run_queue(spark, lake, settings, sink: str) -> None:
    queue.process(make_ctx(spark, lake, settings, job="queue"), sink=sink)


def statuses(lake):
    return {r["dedup_key"]: (r["status"], r["attempts"], r["last_error"]) for r in lake.read("alerts").collect()}


def test_outbox_events_and_reinsert_adds_nothing(spark, lake, outbox):
    assert [(i, e) for i, e, _ in outbox] == [("1" * 16, "opened"), ("1" * 16, "resolved"), ("2" * 16, "opened"),
                                              ("2" * 16, "resolved"), ("3" * 16, "opened")]
    before = lake.read("alerts").collect()
    again = outbox_rows(spark.createDataFrame([incident("1" * 16, 0, 10)], INCIDENTS), lake.read("alerts"),
                        data_horizons((spark.createDataFrame([("shop", datetime(2024, 9, 26, 10, 59))],
                                                             "system string, t timestamp"), "t")),
                        resolve_after_minutes=15, created_at=datetime(2024, 9, 26, 12, 0))
    assert again.count() == 0
    lake.insert_new("alerts", lake.read("alerts"), keys=["alert_id"])
    assert sorted(map(str, lake.read("alerts").collect())) == sorted(map(str, before))


def test_jsonl_sink_delivers_each_alert_once_across_runs(spark, lake, settings, outbox, tmp_path):
    sink = tmp_path / "alerts.jsonl"
    run_queue(spark, lake, fast(settings), f"jsonl:{sink}")
    first = sink.read_text()
    lines = [json.loads(x) for x in first.splitlines()]
    # Oldest first, opened before resolved; every payload carries its key and the explanation.
    assert [(x["incident_id"], x["event"]) for x in lines] == [
        ("1" * 16, "opened"), ("2" * 16, "opened"), ("3" * 16, "opened"), ("1" * 16, "resolved"), ("2" * 16, "resolved"),
    ]
    assert sorted(x["dedup_key"] for x in lines) == sorted(k for _, _, k in outbox)
    assert lines[0]["explanation"] == "db pool exhausted (1111111111111111)"
    assert set(statuses(lake).values()) == {("delivered", 1, None)}
    run_queue(spark, lake, fast(settings), f"jsonl:{sink}")
    assert sink.read_text() == first


def test_webhook_down_flapping_500s_then_up_delivers_every_alert_exactly_once(spark, lake, settings, outbox):
    accepted: Counter[str] = Counter()
    port = free_port()
    url = f"webhook:http://127.0.0.1:{port}/hooks/meltrca?token=s3cret"
    s = fast(settings)

    def scripted(answers):
        def respond(req, n):
            answer = answers[n - 1] if n <= len(answers) else answers[-1]
            if answer == "drop":
                return Reply(drop=True)
            if 200 <= answer < 300:
                assert req.headers["Idempotency-Key"] == req.json()["dedup_key"]
                accepted[req.json()["dedup_key"]] += 1
            return Reply(answer, {"ok": answer < 300})
        return respond

    # 1. Down: nothing listens. The first alert uses its 3 attempts, the rest wait untouched.
    with pytest.raises(MeltrcaError, match="0 alert\\(s\\) delivered, 5 still pending \\(last error: connection-error\\)"):
        run_queue(spark, lake, s, url)
    order = [k for k, _ in sorted(((r["dedup_key"], (r["created_at"], ["opened", "updated", "resolved"].index(r["event"]),
                                                      r["incident_id"], r["alert_id"]))
                                   for r in lake.read("alerts").collect()), key=lambda kv: kv[1])]
    st = statuses(lake)
    assert st[order[0]] == ("pending", 3, "connection-error") and [st[k][1] for k in order[1:]] == [0, 0, 0, 0]

    # 2. Flapping: ok, 503, ok, dropped connection, 503, 503 -> two delivered, the third gives up.
    with ScriptedServer(scripted([200, 503, 200, "drop", 503, 503]), port=port) as srv:
        with pytest.raises(MeltrcaError, match="2 alert\\(s\\) delivered, 3 still pending \\(last error: http-503\\)"):
            run_queue(spark, lake, s, url)
        assert len(srv.requests) == 6 and srv.requests[0].path == "/hooks/meltrca?token=s3cret"

    # 3. 500s: the next alert exhausts its attempts again; nothing is marked delivered.
    with ScriptedServer(scripted([500]), port=port) as srv:
        with pytest.raises(MeltrcaError, match="0 alert\\(s\\) delivered, 3 still pending \\(last error: http-500\\)"):
            run_queue(spark, lake, s, url)
        assert len(srv.requests) == 3

    # 4. Up: the remaining three arrive.
    with ScriptedServer(scripted([200]), port=port) as srv:
        run_queue(spark, lake, s, url)
        assert len(srv.requests) == 3
    # 5. Again: nothing left to send.
    with ScriptedServer(scripted([200]), port=port) as srv:
        run_queue(spark, lake, s, url)
        assert srv.requests == []

    keys = [k for _, _, k in outbox]
    assert accepted == Counter(dict.fromkeys(keys, 1))  # none lost, none twice
    st = statuses(lake)
    assert [st[k] for k in order] == [("delivered", 4, None), ("delivered", 2, None), ("delivered", 7, None),
                                      ("delivered", 1, None), ("delivered", 1, None)]
    sinks = {r["sink"] for r in lake.read("alerts").collect()}
    assert sinks == {f"webhook:http://127.0.0.1:{port}/hooks/meltrca"}  # the token is not stored


def test_lost_acknowledgement_gives_one_detectable_duplicate(spark, lake, settings, outbox):
    """At-least-once: the receiver accepted, the answer came after the client's timeout, the client retried."""
    received: Counter[str] = Counter()

    def respond(req, n):
        received[req.json()["dedup_key"]] += 1
        return Reply(200, {"ok": True}, delay=1.0 if n == 1 else 0.0)

    with ScriptedServer(respond) as srv:
        run_queue(spark, lake, fast(settings, **{"alerts.timeout_seconds": 0.3}), f"webhook:{srv.url}/hook")
    assert sorted(received.values()) == [1, 1, 1, 1, 2]
    assert set(received) == {k for _, _, k in outbox}
    assert {v[0] for v in statuses(lake).values()} == {"delivered"}


def test_rejected_alert_stays_pending_and_others_go_through(spark, lake, settings, outbox):
    bad = outbox[2][2]
    with ScriptedServer(lambda r, n: Reply(400 if r.json()["dedup_key"] == bad else 204, b"")) as srv:
        with pytest.raises(MeltrcaError, match="4 alert\\(s\\) delivered, 1 still pending \\(last error: http-400\\)"):
            run_queue(spark, lake, fast(settings), f"webhook:{srv.url}")
        assert len(srv.requests) == 5  # a 4xx is not retried
    st = statuses(lake)
    assert st.pop(bad) == ("pending", 1, "http-400") and set(st.values()) == {("delivered", 1, None)}
    assert lake.read("alerts").where(F.col("status") == "pending").count() == 1


@pytest.mark.parametrize("sink", ["ftp://x", "webhook:file:///etc/passwd", "jsonl:"])
def test_bad_sink_is_a_config_error(spark, lake, settings, outbox, sink):
    with pytest.raises(ConfigError, match="--sink"):
        run_queue(spark, lake, settings, sink)
