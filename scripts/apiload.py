#!/usr/bin/env python3
"""Password checks through `mfasync serve` on one kept-alive HTTP connection,
with the CPU that `serve` and slapd spent per check (BENCHMARKS.md, issue 5).

    (sleep 3000 | BENCH_AUTH_HOLD=1 target/release/examples/bench_auth > /tmp/hold.out &)
    python3 scripts/apiload.py DB_PATH BIN CHECKS PORT

DB_PATH: the database the held setup prints (without sqlite://); BIN: the
mfasync build to start `serve` from, on 127.0.0.1:PORT. An API token is added
to the database. The users are the held setup's (u00000.., password pw-N).
Prints `serve` and slapd CPU per check (from /proc/PID/stat, after 200 checks
of warm-up), p50 latency and wall time per check.
"""
import hashlib
import http.client
import json
import os
import sqlite3
import subprocess
import sys
import time

db_path, binary, checks, port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
TOKEN = "bench-api-token-0123456789"
USERS = 1000

db = sqlite3.connect(db_path)
db.execute(
    "INSERT OR IGNORE INTO auth_tokens VALUES (?, 'api', 'admin', 'apiload', NULL, '2026-01-01T00:00:00Z', NULL)",
    (hashlib.sha256(TOKEN.encode()).hexdigest(),),
)
db.commit()
db.close()

serve = subprocess.Popen(
    [binary, "--database", "sqlite://" + db_path, "serve", "--listen", f"127.0.0.1:{port}"],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
try:
    time.sleep(1.5)

    def cpu(pid):
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    slapd = int(subprocess.check_output(["pgrep", "-n", "slapd"]).split()[0])
    conn = http.client.HTTPConnection("127.0.0.1", port)

    def check(i):
        body = json.dumps({"username": f"u{i:05}", "password": f"pw-{i}"})
        conn.request(
            "POST",
            "/api/v1/auth",
            body,
            {"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"},
        )
        answer = conn.getresponse().read()
        assert answer == b'{"ok":true}', answer

    for i in range(200):
        check(i % USERS)
    serve0, slapd0, wall0 = cpu(serve.pid), cpu(slapd), time.time()
    latencies = []
    for k in range(checks):
        start = time.perf_counter()
        check((k * 7919) % USERS)
        latencies.append(time.perf_counter() - start)
    serve1, slapd1, wall1 = cpu(serve.pid), cpu(slapd), time.time()
    latencies.sort()
    print(
        f"serve cpu/check {1e6 * (serve1 - serve0) / checks:.0f} us, "
        f"slapd cpu/check {1e6 * (slapd1 - slapd0) / checks:.0f} us, "
        f"p50 {1e3 * latencies[checks // 2]:.3f} ms, "
        f"wall/check {1e6 * (wall1 - wall0) / checks:.0f} us"
    )
finally:
    serve.kill()
    serve.wait()
