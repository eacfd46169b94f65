"""The peer of the reaction benchmark: a hand-rolled scaling script, as teams write them with
boto3 before they adopt a tool. Per service: DescribeServices, GetMetricStatistics (CPU, last 3
minutes), and UpdateService when CPU is above target (+10 %) -- the same target-tracking rule
ecscale's bench policy applies.

    naive_scaler.py --endpoint URL --region R --cluster C --services a,b,c --target 50 --now EPOCH

Prints one JSON line: calls per operation, the milliseconds from the start of the pass to each
UpdateService call (and to the end of the pass), and the CPU the pass took (user + system).
"""
import argparse
import collections
import datetime
import json
import math
import resource
import time

import boto3

p = argparse.ArgumentParser()
p.add_argument("--endpoint", required=True)
p.add_argument("--region", required=True)
p.add_argument("--cluster", required=True)
p.add_argument("--services", required=True)
p.add_argument("--target", type=float, default=50.0)
p.add_argument("--now", type=float, required=True, help="the pass's now (epoch seconds)")
a = p.parse_args()

kw = dict(endpoint_url=a.endpoint, region_name=a.region,
          aws_access_key_id="bench", aws_secret_access_key="bench")
ecs = boto3.client("ecs", **kw)
cw = boto3.client("cloudwatch", **kw)
calls = collections.Counter()
updates_ms = []
now = datetime.datetime.fromtimestamp(a.now, tz=datetime.timezone.utc)

start = time.perf_counter()
cpu_start = resource.getrusage(resource.RUSAGE_SELF)
for name in a.services.split(","):
    calls["ECS.DescribeServices"] += 1
    svc = ecs.describe_services(cluster=a.cluster, services=[name])["services"][0]
    calls["CloudWatch.GetMetricStatistics"] += 1
    points = cw.get_metric_statistics(
        Namespace="AWS/ECS", MetricName="CPUUtilization",
        Dimensions=[{"Name": "ClusterName", "Value": a.cluster}, {"Name": "ServiceName", "Value": name}],
        StartTime=now - datetime.timedelta(minutes=4), EndTime=now - datetime.timedelta(minutes=1),
        Period=60, Statistics=["Average"])["Datapoints"]
    if not points:
        continue
    cpu = sum(x["Average"] for x in points) / len(points)
    current = svc["desiredCount"]
    if cpu > a.target * 1.1:
        desired = math.ceil(current * cpu / a.target)
        if desired != current:
            calls["ECS.UpdateService"] += 1
            ecs.update_service(cluster=a.cluster, service=name, desiredCount=desired)
            updates_ms.append((time.perf_counter() - start) * 1000)
total_ms = (time.perf_counter() - start) * 1000
cpu_end = resource.getrusage(resource.RUSAGE_SELF)
cpu_ms = ((cpu_end.ru_utime - cpu_start.ru_utime) + (cpu_end.ru_stime - cpu_start.ru_stime)) * 1000
print(json.dumps({"calls": calls, "updates_ms": updates_ms, "total_ms": total_ms, "cpu_ms": cpu_ms}))
