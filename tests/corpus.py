"""A corpus of bad input per ingest format, written into a folder at test time (issue 25).

Each builder writes its files and a mapping and returns the records it expects in quarantine
(raw record -> reason), the number of clean rows and of exact duplicates. Shared troubles, in
every text format: malformed records, unparsable / negative-epoch / future timestamps, NaN and
infinities, wrong types, schema drift (an extra column, a missing optional one), exact duplicate
rows, an empty file (header only), a zero-byte file, a truncated gzip, a 1 MB log line, bytes that
are not UTF-8, and unicode that is.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

GOOD_TS = ["2024-09-26T10:00:00Z", "2024-09-26T10:01:00Z", "2024-09-26T10:02:00Z"]
EPOCH_S = 1727344800  # 2024-09-26T10:00:00Z


@dataclass
class Corpus:
    mapping: Path
    counts: tuple[int, int, int, int]  # in, accepted, quarantined, deduplicated: where every record went
    quarantine: list[tuple[str, str, str]] = field(default_factory=list)  # (file, raw record, reason)
    accepted: list[tuple] = field(default_factory=list)  # (service, ts, metric|level, value|message prefix)


CORRUPT = "corrupt_file: java.io.EOFException: Unexpected end of input stream"


def _truncated_gzip(path: Path, text: str) -> None:
    data = gzip.compress(text.encode())
    path.write_bytes(data[: len(data) // 2])


def csv_metrics(root: Path) -> Corpus:
    header = "ts,service,metric,value\n"
    rows = [f"{GOOD_TS[0]},api,cpu,1.5", f"{GOOD_TS[1]},api,cpu,2.5", f"{GOOD_TS[2]},ünïcødé-svc,cpu,3"]
    bad = {
        f"{GOOD_TS[0]},api,cpu": "malformed_line: expected 4 fields",
        "yesterday,api,cpu,2": "unparsable_timestamp: ts 'yesterday'",
        "-1969-01-01T00:00:00Z,api,cpu,2": "timestamp_too_old: ts -1969-01-01T00:00:00Z",
        "2999-01-01T00:00:00Z,api,cpu,1": "future_timestamp: ts 2999-01-01T00:00:00Z",
        f"{GOOD_TS[0]},api,cpu,NaN": "nan_value: value 'NaN'",
        f"{GOOD_TS[0]},api,cpu,inf": "nan_value: value 'inf'",
        f"{GOOD_TS[0]},api,cpu,abc": "invalid_number: value 'abc'",
    }
    (root / "a.csv").write_text(header + "\n".join([*rows, rows[0], *bad]) + "\n")
    (root / "b.csv").write_text("ts,service,metric,value,extra\n" + f"{GOOD_TS[1]},db,cpu,4,x\n")  # drift: extra column
    (root / "c.csv").write_text(header)  # header only
    (root / "d.csv").write_bytes(b"")  # zero bytes
    (root / "e.csv").write_bytes(header.encode() + f"{GOOD_TS[0]},caf".encode() + b"\xe9\xff,cpu,1\n")  # latin-1 bytes
    _truncated_gzip(root / "f.csv.gz", header + "".join(f"{GOOD_TS[0]},gz,cpu,{i}\n" for i in range(2000)))
    (root / "mapping.yaml").write_text(
        "system: corpus\nroot: .\nmetrics:\n  files: '*.csv*'\n  format: csv\n"
        "  fields: {ts: {column: ts, format: iso}, service: service, metric: metric, value: value}\n")
    return Corpus(
        root / "mapping.yaml", (14, 5, 8, 1),
        [("a.csv", record, reason) for record, reason in bad.items()] + [("f.csv.gz", f"file:{root / 'f.csv.gz'}", CORRUPT)],
        [("api", 0, "cpu", 1.5), ("api", 1, "cpu", 2.5), ("caf\ufffd\ufffd", 0, "cpu", 1.0), ("db", 1, "cpu", 4.0),
         ("ünïcødé-svc", 2, "cpu", 3.0)],  # bytes that are not UTF-8 read as U+FFFD (kept, not guessed)
    )


def jsonl_logs(root: Path) -> Corpus:
    def line(**kw: object) -> str:
        return json.dumps(kw, ensure_ascii=False)

    rows = [
        line(ts=GOOD_TS[0], service="api", level="INFO", msg="started"),
        line(ts=GOOD_TS[1], service="api", level="ERROR", msg="payment failed: ünïcødé ✓"),
        line(ts=GOOD_TS[2], service="api", level="WARN", msg="x" * 1_048_576),  # 1 MB: truncated, kept
        line(ts=GOOD_TS[2], service="api", level="INFO", msg="drift", extra={"k": 1}),  # extra field
        line(ts=GOOD_TS[0], service="api", level="INFO", msg=["a", "list"]),  # wrong type: kept as its JSON text
    ]
    bad = {
        "not json at all": "malformed_json: not a JSON object",
        '{"ts": "2024-09-26T10:00:01Z", "service": "api", "level": "INFO", "msg": "cut': "malformed_json: not a JSON object",
        line(ts=-5, service="api", level="INFO", msg="negative epoch"): "timestamp_too_old: ts 1969-12-31T23:59:55Z",
        line(ts=GOOD_TS[0], service="api", level="INFO"): "missing_field: message",
    }
    (root / "a.jsonl").write_text("\n".join([*rows, rows[0], *bad]) + "\n")
    (root / "b.jsonl").write_bytes(b"")
    (root / "c.jsonl").write_bytes(b'{"ts": "2024-09-26T10:00:03Z", "service": "api", "level": "INFO", "msg": "caf\xe9"}\n')
    _truncated_gzip(root / "d.jsonl.gz", "".join(line(ts=GOOD_TS[0], service="gz", level="INFO", msg=f"m{i}") + "\n"
                                                  for i in range(2000)))
    (root / "mapping.yaml").write_text(
        "system: corpus\nroot: .\nlogs:\n  files: '*.jsonl*'\n  format: jsonl\n"
        "  fields: {ts: ts, service: service, level: level, message: msg}\n")
    return Corpus(
        root / "mapping.yaml", (12, 6, 5, 1),
        [("a.jsonl", record, reason) for record, reason in bad.items()] + [("d.jsonl.gz", f"file:{root / 'd.jsonl.gz'}", CORRUPT)],
        [("api", 0, "INFO", '["a","list"]'), ("api", 0, "INFO", "started"), ("api", 1, "ERROR", "payment failed: ünïcødé ✓"),
         ("api", 2, "INFO", "drift"), ("api", 2, "WARN", "x" * 8192), ("api", 3 / 60, "INFO", "caf\ufffd")],
    )


def wide_csv(root: Path) -> Corpus:
    header = "time,api_cpu,api_mem,db_cpu\n"
    rows = [f"{EPOCH_S},0.5,256,0.1", f"{EPOCH_S + 60},0.6,,0.2", f"{EPOCH_S + 120},NaN,abc,ünï"]
    (root / "a.csv").write_text(header + "\n".join([*rows, rows[0], f"{EPOCH_S + 180},0.7", "yesterday,1,2,3"]) + "\n")
    (root / "b.csv").write_text("time,api_cpu,api_mem,db_cpu,cache_hits\n" + f"{EPOCH_S + 240},0.8,260,0.3,7\n")  # drift
    (root / "c.csv").write_bytes(b"")
    _truncated_gzip(root / "d.csv.gz", header + "".join(f"{EPOCH_S + 60 * i},1,2,3\n" for i in range(2000)))
    (root / "mapping.yaml").write_text(
        "system: corpus\nroot: .\nmetrics:\n  files: '*.csv*'\n  format: wide_csv\n"
        "  fields:\n    ts: {column: time, format: epoch_s}\n"
        "  values:\n    exclude: [time]\n    split: {separator: \"_\", at: first}\n")
    return Corpus(
        root / "mapping.yaml", (21, 9, 9, 3),
        [("a.csv", f"{EPOCH_S + 60},0.6,,0.2", "missing_field: value (column 'api_mem')"),
         ("a.csv", f"{EPOCH_S + 120},NaN,abc,ünï", "nan_value: value 'NaN' (column 'api_cpu')"),
         ("a.csv", f"{EPOCH_S + 120},NaN,abc,ünï", "invalid_number: value 'abc' (column 'api_mem')"),
         ("a.csv", f"{EPOCH_S + 120},NaN,abc,ünï", "invalid_number: value 'ünï' (column 'db_cpu')"),
         ("a.csv", f"{EPOCH_S + 180},0.7", "malformed_line: expected 4 fields"),
         *[("a.csv", "yesterday,1,2,3", f"unparsable_timestamp: ts 'yesterday' (column '{c}')")
           for c in ("api_cpu", "api_mem", "db_cpu")],
         ("d.csv.gz", f"file:{root / 'd.csv.gz'}", CORRUPT)],
        [("api", 0, "cpu", 0.5), ("api", 1, "cpu", 0.6), ("api", 4, "cpu", 0.8), ("api", 0, "mem", 256.0),
         ("api", 4, "mem", 260.0), ("cache", 4, "hits", 7.0), ("db", 0, "cpu", 0.1), ("db", 1, "cpu", 0.2), ("db", 4, "cpu", 0.3)],
    )


def otlp_logs(root: Path) -> Corpus:
    def record(ts: str, body: str) -> dict:
        return {"timeUnixNano": ts, "severityText": "INFO", "body": {"stringValue": body}}

    def line(*records: dict, service: str = "cart") -> str:
        return json.dumps({"resourceLogs": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
            "scopeLogs": [{"logRecords": list(records)}]}]}, ensure_ascii=False)

    ns = str(EPOCH_S * 10**9)
    good = line(record(ns, "hello"), record(str(EPOCH_S * 10**9 + 10**9), "ünïcødé ✓"))
    (root / "a.jsonl").write_text("\n".join([
        good, good, "not json", line(record("abc", "bad time")), line(record("-5", "negative")),
        '{"resourceLogs": [{"resource": ', line(record(ns, "x" * 1_048_576)), '{"somethingElse": 1}',
    ]) + "\n")
    (root / "b.jsonl").write_bytes(b"")
    _truncated_gzip(root / "c.jsonl.gz", "".join(line(record(ns, f"m{i}")) + "\n" for i in range(2000)))
    (root / "mapping.yaml").write_text("system: corpus\nroot: .\nlogs: {files: '*.jsonl*', format: otlp_json}\n")
    return Corpus(
        root / "mapping.yaml", (11, 3, 6, 2),
        [("a.jsonl", json.dumps(record("abc", "bad time"), separators=(",", ":")), "unparsable_timestamp: ts 'abc'"),
         ("a.jsonl", json.dumps(record("-5", "negative"), separators=(",", ":")), "timestamp_too_old: ts 1969-12-31T23:59:59Z"),
         ("a.jsonl", "not json", "malformed_json: not an OTLP JSON object"),
         ("a.jsonl", '{"resourceLogs": [{"resource": ', "malformed_json: not an OTLP JSON object"),
         ("a.jsonl", '{"somethingElse": 1}', "malformed_otlp: no resourceSpans, resourceLogs or resourceMetrics"),
         ("c.jsonl.gz", f"file:{root / 'c.jsonl.gz'}", CORRUPT)],
        [("cart", 0, "INFO", "hello"), ("cart", 0, "INFO", "x" * 8192), ("cart", 1 / 60, "INFO", "ünïcødé ✓")],
    )
