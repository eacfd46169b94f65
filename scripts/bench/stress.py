#!/usr/bin/env python3
"""The stress benchmark (issue 6): ecscale stress vs wrk and oha against nginx (1 worker) on
loopback, in one run, interleaved.

1. Throughput: 50 connections, DURATION (10 s), REPS (3) rounds, the tool order rotated each
   round: requests/s, generator CPU per request (user+sys of the tool's process), peak RSS;
   over plain HTTP/1.1, then over HTTPS (TLS 1.3, keep-alive; nginx with a self-signed
   certificate made here with openssl; ecscale trusts it with --cacert, wrk does not check,
   oha with --insecure).
2. Constant rate: 20,000 req/s for DURATION with 50 connections, ecscale --rate vs oha -q
   (with --latency-correction): achieved rate against the plan, CPU per request; both schemes.
3. Memory with run length: ecscale's peak RSS at DURATION and at 3 x DURATION.

Usage: stress.py ECSCALE WRK OHA NGINX [DURATION_S] [REPS]
"""

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def make_cert(work):
    """A self-signed P-256 certificate for localhost and 127.0.0.1: (cert, key)."""
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


def start_nginx(nginx, work):
    port, tls_port = free_port(), free_port()
    cert, key = make_cert(work)
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(
            f"""worker_processes 1;
daemon off;
error_log {work}/error.log;
pid {work}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path {work}/body;
  proxy_temp_path {work}/proxy;
  fastcgi_temp_path {work}/fastcgi;
  uwsgi_temp_path {work}/uwsgi;
  scgi_temp_path {work}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 200 "container-1\\n"; }}
  }}
  server {{
    listen 127.0.0.1:{tls_port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.3;
    location / {{ return 200 "container-1\\n"; }}
  }}
}}
"""
        )
    proc = subprocess.Popen([nginx, "-c", conf, "-p", work], stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            import urllib.request

            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
            return proc, f"http://127.0.0.1:{port}/", f"https://localhost:{tls_port}/", cert
        except Exception:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("nginx did not start")


def hwm(pid):
    """The process's peak RSS so far (VmHWM), in KiB; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def measure(argv):
    """Runs argv; returns (stdout, cpu seconds, peak RSS MiB, wall seconds).

    The peak RSS is sampled from /proc (VmHWM, a high-water mark) every 50 ms: getrusage's
    ru_maxrss of a child also counts the forking Python's own pages before exec.
    """
    import threading

    t0 = time.monotonic()
    out_file = tempfile.TemporaryFile()
    p = subprocess.Popen(argv, stdout=out_file, stderr=subprocess.DEVNULL)
    peak = [0]

    def sample():
        while True:
            v = hwm(p.pid)
            if v is None:
                return
            peak[0] = max(peak[0], v)
            time.sleep(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, status, ru = os.wait4(p.pid, 0)
    t.join()
    wall = time.monotonic() - t0
    out_file.seek(0)
    out = out_file.read()
    if os.waitstatus_to_exitcode(status) not in (0,):
        raise SystemExit(f"{argv[0]} failed ({status}): {out[-500:]!r}")
    return out.decode(errors="replace"), ru.ru_utime + ru.ru_stime, peak[0] / 1024.0, wall


def run_wrk(wrk, url, secs, conns):
    out, cpu, rss, _ = measure([wrk, "-t2", f"-c{conns}", f"-d{secs}s", url])
    n = int(re.search(r"(\d+) requests in", out).group(1))
    return n, n / secs, cpu, rss


def run_oha(oha, url, secs, conns, rate=None):
    argv = [oha, "--no-tui", "--output-format", "json", "-c", str(conns), "-z", f"{secs}s"]
    if url.startswith("https:"):
        argv += ["--insecure"]
    if rate:
        argv += ["-q", str(rate), "--latency-correction"]
    out, cpu, rss, _ = measure(argv + [url])
    j = json.loads(out)
    n = sum(j["statusCodeDistribution"].values())
    return n, n / secs, cpu, rss


CACERT = None


def run_ecscale(ecscale, url, secs, conns, work, rate=None):
    out_json = os.path.join(work, "ecscale.json")
    argv = [ecscale, "stress", "--url", url, "--duration", f"{secs}s", "--connections", str(conns)]
    argv += ["--progress", "off", "--json", out_json]
    if url.startswith("https:"):
        argv += ["--cacert", CACERT]
    if rate:
        argv += ["--rate", str(rate)]
    _, cpu, rss, _ = measure(argv)
    with open(out_json) as f:
        j = json.load(f)
    n = j["totals"]["requests"]
    return n, n / secs, cpu, rss


def spread(xs):
    return f"{min(xs):,.0f}–{max(xs):,.0f}"


def throughput(tools, reps, conns, secs, label):
    names = list(tools)
    results = {n: [] for n in names}
    for r in range(reps):
        order = names[r % 3 :] + names[: r % 3]
        for n in order:
            res = tools[n]()
            results[n].append(res)
            print(f"{label} round {r + 1} {n:8} {res[1]:>10,.0f} req/s  {1e6 * res[2] / res[0]:6.2f} µs CPU/req  {res[3]:7.1f} MiB", flush=True)
    print(f"\n## Throughput over {label}: {conns} connections, {secs} s, {reps} interleaved rounds, medians (spread)")
    print("| tool | requests/s | CPU per request | peak RSS |")
    print("|---|---|---|---|")
    med = {}
    for n in names:
        rs = results[n]
        rps = [x[1] for x in rs]
        cpus = [1e6 * x[2] / x[0] for x in rs]
        rss = max(x[3] for x in rs)
        med[n] = (statistics.median(rps), statistics.median(cpus), rss)
        print(f"| {n} | {med[n][0]:,.0f} ({spread(rps)}) | {med[n][1]:.2f} µs ({min(cpus):.2f}–{max(cpus):.2f}) | {rss:.1f} MiB |")
    best = max(med["wrk"][0], med["oha"][0])
    print(f"\n{label}: ecscale / wrk requests/s {med['ecscale'][0] / med['wrk'][0]:.3f}, / best peer {med['ecscale'][0] / best:.3f}")
    print(f"{label}: ecscale / wrk CPU per request {med['ecscale'][1] / med['wrk'][1]:.3f}, / oha {med['ecscale'][1] / med['oha'][1]:.3f}")


def constant_rate(oha, ecscale, url, secs, conns, work, label):
    rate = 20000
    print(f"\n## Constant rate over {label}: {rate:,} req/s planned, {conns} connections, {secs} s, 3 interleaved rounds, medians (spread)")
    print("| tool | achieved req/s | of plan | CPU per request | peak RSS |")
    print("|---|---|---|---|---|")
    tools = [
        ("oha -q --latency-correction", lambda: run_oha(oha, url, secs, conns, rate)),
        ("ecscale --rate", lambda: run_ecscale(ecscale, url, secs, conns, work, rate)),
    ]
    runs = {n: [] for n, _ in tools}
    for r in range(3):
        for n, f in tools[r % 2 :] + tools[: r % 2]:
            runs[n].append(f())
    for n, _ in tools:
        rs = runs[n]
        rps = [x[1] for x in rs]
        cpus = [1e6 * x[2] / x[0] for x in rs]
        print(f"| {n} | {statistics.median(rps):,.0f} ({spread(rps)}) | {100 * statistics.median(rps) / rate:.2f}% | {statistics.median(cpus):.2f} µs ({min(cpus):.2f}–{max(cpus):.2f}) | {max(x[3] for x in rs):.1f} MiB |")


def main():
    global CACERT
    ecscale, wrk, oha, nginx = sys.argv[1:5]
    secs = int(sys.argv[5]) if len(sys.argv) > 5 else 10
    reps = int(sys.argv[6]) if len(sys.argv) > 6 else 3
    conns = 50
    work = tempfile.mkdtemp(prefix="ecscale-bench-stress-")
    proc, url, tls_url, CACERT = start_nginx(nginx, work)
    try:
        for label, u in [("HTTP/1.1", url), ("HTTPS", tls_url)]:
            tools = {
                "wrk": lambda u=u: run_wrk(wrk, u, secs, conns),
                "oha": lambda u=u: run_oha(oha, u, secs, conns),
                "ecscale": lambda u=u: run_ecscale(ecscale, u, secs, conns, work),
            }
            throughput(tools, reps, conns, secs, label)
        for label, u in [("HTTP/1.1", url), ("HTTPS", tls_url)]:
            constant_rate(oha, ecscale, u, secs, conns, work, label)

        print(f"\n## ecscale's memory with run length (max connections, {conns})")
        for label, u in [("HTTP/1.1", url), ("HTTPS", tls_url)]:
            short = run_ecscale(ecscale, u, secs, conns, work)
            long = run_ecscale(ecscale, u, 3 * secs, conns, work)
            print(f"| {label} run | requests | peak RSS |\n|---|---|---|")
            print(f"| {secs} s | {short[0]:,} | {short[3]:.1f} MiB |")
            print(f"| {3 * secs} s | {long[0]:,} | {long[3]:.1f} MiB |")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
