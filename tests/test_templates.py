"""Log template mining: masking (Spark), Drain-style clustering (pure Python), stable ids."""

from __future__ import annotations

import hashlib

from pyspark.sql import Row
from pyspark.testing import assertDataFrameEqual

from meltrca.templates import TemplateMiner, assign_templates, mask_messages, mine_templates, template_id


def test_miner_merges_similar_messages_into_wildcards():
    miner = TemplateMiner(similarity=0.5)
    got = miner.fit(["connect to db-1 failed", "connect to db-2 failed", "disk full on /var", "connect to cache failed"])
    assert got == {
        "connect to db-1 failed": "connect to <*> failed",
        "connect to db-2 failed": "connect to <*> failed",
        "connect to cache failed": "connect to <*> failed",
        "disk full on /var": "disk full on /var",
    }


def test_miner_keeps_dissimilar_messages_apart_and_respects_threshold():
    strict = TemplateMiner(similarity=0.9)
    assert strict.fit(["a b c d", "a b c x"]) == {"a b c d": "a b c d", "a b c x": "a b c x"}
    loose = TemplateMiner(similarity=0.7)
    assert loose.fit(["a b c d", "a b c x"]) == {"a b c d": "a b c <*>", "a b c x": "a b c <*>"}
    # different lengths never merge
    assert len(set(TemplateMiner().fit(["a b", "a b c"]).values())) == 2


def test_seed_templates_are_frozen_and_most_specific_wins():
    miner = TemplateMiner(similarity=0.5, seeds=[["user", "<*>", "logged", "in"], ["user", "admin", "logged", "<*>"]])
    got = miner.fit(["user admin logged in", "user bob logged in", "user bob logged out now"])
    assert got["user admin logged in"] == "user <*> logged in"  # both match; ties -> fewest wildcards, then text
    assert got["user bob logged in"] == "user <*> logged in"
    assert got["user bob logged out now"] == "user bob logged out now"
    assert miner.seeds == [["user", "<*>", "logged", "in"], ["user", "admin", "logged", "<*>"]]


def test_template_id_is_the_sha1_prefix_of_the_text():
    text = "user <*> logged in"
    assert template_id(text) == hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]
    assert template_id("x") != template_id("y")


def test_masking_replaces_variable_parts(spark):
    messages = [
        'GET "/api/orders?id=7" from 10.4.38.168:8080 took 12.5ms',
        "order 123e4567-e89b-12d3-a456-426614174000 at 2024-09-26T10:00:01.123Z",
        "t.s.TravelServiceImpl#457 TraceID: 2ffbc4a03bbc5600a45841d05e452454 SpanID: 04ba577c01a08838 [getTickets]",
        "retry 3 of 5 (0x1F), pool 95% used, v2 build G1234",
        "calculate time：16  time: Sat May 04 07:16:00 CST 2013]",
    ]
    df = spark.createDataFrame([Row(message=m) for m in messages])
    got = [r["masked"] for r in mask_messages(df).collect()]
    assert got == [
        "GET <STR> from <IP> took <NUM>ms",
        "order <UUID> at <TS>",
        "t.s.TravelServiceImpl#457 TraceID: <HEX> SpanID: <HEX> [getTickets]",
        "retry <NUM> of <NUM> (<HEX>), pool <NUM>% used, v2 build G1234",
        "calculate time：<NUM> time: Sat May <NUM> <NUM>:<NUM>:<NUM> CST <NUM>]",
    ]


def test_distributed_mining_with_seeds_assigns_every_line(spark):
    logs = spark.createDataFrame(
        [
            Row(system="s", message="user 42 logged in"),
            Row(system="s", message="user 7 logged in"),
            Row(system="s", message="GET /a failed"),
            Row(system="s", message="GET /b failed"),
            Row(system="t", message="user 42 logged in"),
        ]
    ).transform(mask_messages)
    counts = logs.groupBy("system", "masked").count()
    # a seed whose group gets no message this time (the group returns no rows)
    seeds = spark.createDataFrame([Row(system="s", template="GET <*> failed"), Row(system="s", template="idle <*>")])
    matches = mine_templates(counts, seeds, similarity=0.5)
    expected = [
        Row(system="s", masked="user <NUM> logged in", template="user <NUM> logged in", template_id=template_id("user <NUM> logged in")),
        Row(system="s", masked="GET /a failed", template="GET <*> failed", template_id=template_id("GET <*> failed")),
        Row(system="s", masked="GET /b failed", template="GET <*> failed", template_id=template_id("GET <*> failed")),
        Row(system="t", masked="user <NUM> logged in", template="user <NUM> logged in", template_id=template_id("user <NUM> logged in")),
    ]
    assertDataFrameEqual(matches, spark.createDataFrame(expected))
    tagged = assign_templates(logs, matches)
    assert tagged.where("template_id IS NULL").count() == 0 and tagged.count() == 5
