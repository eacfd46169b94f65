#!/usr/bin/env python3
"""The peer of ecscale's shipper in the shipping benchmark: elasticsearch-py's streaming_bulk.

Generates the same documents as benches/ship.rs (about 1.2 KB each) and ships them to URL.
Prints one JSON line: docs, seconds, cpu_seconds (this process), bytes per document.
    streaming_bulk.py URL DOCS
"""
import json
import resource
import sys
import time

from elasticsearch import Elasticsearch
from elasticsearch.helpers import streaming_bulk

url, n = sys.argv[1], int(sys.argv[2])
PAD = "x" * 820


def actions():
    for i in range(n):
        yield {
            "_op_type": "index",
            "_index": "bench-metrics-2026.11.25",
            "_id": f"sample:bench/svc-{i % 50}:cpu:{i}",
            "_source": {
                "kind": "sample", "target": f"bench/svc-{i % 50}", "cluster": "bench",
                "service": f"svc-{i % 50}", "metric": "cpu", "namespace": "AWS/ECS",
                "metric_name": "CPUUtilization", "stat": "Average", "unit": "Percent", "period_secs": 60,
                "dimensions": {"ClusterName": "bench", "ServiceName": f"svc-{i % 50}", "Padding": PAD},
                "value": (i % 100) + 0.5,
                "@timestamp": "2026-11-25T10:00:00.000Z",
            },
        }


es = Elasticsearch([url], timeout=60)
cpu0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.monotonic()
ok = 0
for success, _ in streaming_bulk(es, actions(), chunk_size=4000, max_chunk_bytes=5 * 1024 * 1024, raise_on_error=False):
    ok += success
elapsed = time.monotonic() - t0
cpu1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
size = len(json.dumps(next(actions())["_source"]))
print(json.dumps({"docs": ok, "seconds": elapsed, "cpu_seconds": cpu, "doc_bytes": size,
                  "max_rss_kib": cpu1.ru_maxrss}))
