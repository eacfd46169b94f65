#!/usr/bin/env python3
"""An example external policy for ecscale.

Reads the evaluation input (JSON) on stdin, answers {"desired": N, "reason": "..."} on stdout.
Here: keep the average CPU at --target-cpu, like target tracking, as a model of your own would.
"""
import argparse
import json
import math
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--target-cpu", type=float, default=60.0)
args = parser.parse_args()

request = json.load(sys.stdin)
current = request["current"]
samples = request["metrics"].get("cpu", {}).get("samples", [])
if not samples:
    print(json.dumps({"desired": current, "reason": "no CPU datapoints: keep the count"}))
    sys.exit(0)
cpu = samples[-1]["value"]
desired = max(1, math.ceil(current * cpu / args.target_cpu))
print(json.dumps({"desired": desired, "reason": f"cpu {cpu:g} % for a target of {args.target_cpu:g} %"}))
