#!/usr/bin/env python3
"""The client side of bench/jobs.sh: submits jobs to /v1/jobs, waits for the
queue to finish them, and checks every submitted job's final state.
Standard library only (threads and keep-alive HTTP/1.1 connections).

  jobs.py submit --url U --key K --count N --concurrency C --ids FILE
      submits N jobs from C threads, appends each job id to FILE, prints a
      JSON line {"submitted", "errors", "seconds", "rate"}
  jobs.py wait --url U --key K --completed N --timeout S [--since T]
      polls GET /admin/queue every 50 ms until `completed` reaches N; prints
      {"completed", "seconds"} (seconds since T, a Unix time, default now)
  jobs.py verify --url U --key K --ids FILE
      GETs every job in FILE; prints {"jobs", "by_status", "attempts_over_1",
      "missing"} (missing: ids the gateway does not know)
"""

import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse


def connection(url):
    parts = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)


def call(conn, method, path, key, body=None):
    headers = {"authorization": f"Bearer {key}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def submit(args):
    lock = threading.Lock()
    next_index = [0]
    ids = []
    errors = [0]

    def worker():
        conn = connection(args.url)
        while True:
            with lock:
                n = next_index[0]
                if n >= args.count:
                    return
                next_index[0] += 1
            body = {
                "request": {
                    "model": args.model,
                    "messages": [{"role": "user", "content": f"Job number {n}: say hello."}],
                },
                "priority": n % 11,
            }
            try:
                status, raw = call(conn, "POST", "/v1/jobs", args.key, body)
                if status == 202:
                    with lock:
                        ids.append(json.loads(raw)["id"])
                else:
                    with lock:
                        errors[0] += 1
            except (OSError, http.client.HTTPException):
                with lock:
                    errors[0] += 1
                conn = connection(args.url)

    started = time.time()
    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.time() - started
    with open(args.ids, "a", encoding="utf-8") as out:
        out.writelines(f"{i}\n" for i in ids)
    print(json.dumps({"submitted": len(ids), "errors": errors[0], "seconds": round(seconds, 3),
                      "rate": round(len(ids) / seconds, 1) if seconds > 0 else None}))


def wait(args):
    since = args.since or time.time()
    deadline = time.time() + args.timeout
    conn = connection(args.url)
    completed = 0
    while time.time() < deadline:
        try:
            status, raw = call(conn, "GET", "/admin/queue", args.key)
            if status == 200:
                completed = json.loads(raw)["completed"]
                if completed >= args.completed:
                    print(json.dumps({"completed": completed, "seconds": round(time.time() - since, 3)}))
                    return
        except (OSError, http.client.HTTPException, ValueError):
            conn = connection(args.url)
        time.sleep(0.05)
    print(json.dumps({"completed": completed, "seconds": None, "timed_out": True}))
    sys.exit(1)


def verify(args):
    with open(args.ids, encoding="utf-8") as f:
        ids = [line.strip() for line in f if line.strip()]
    by_status = {}
    attempts_over_1 = 0
    missing = 0
    conn = connection(args.url)
    for job_id in ids:
        for _ in range(3):
            try:
                status, raw = call(conn, "GET", f"/v1/jobs/{job_id}", args.key)
                break
            except (OSError, http.client.HTTPException):
                conn = connection(args.url)
        else:
            status, raw = 0, b""
        if status == 404:
            missing += 1
            continue
        job = json.loads(raw)
        by_status[job["status"]] = by_status.get(job["status"], 0) + 1
        if job["attempts"] > 1:
            attempts_over_1 += 1
    print(json.dumps({"jobs": len(ids), "by_status": by_status,
                      "attempts_over_1": attempts_over_1, "missing": missing}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("submit", "wait", "verify"):
        p = sub.add_parser(name)
        p.add_argument("--url", required=True)
        p.add_argument("--key", required=True)
        if name == "submit":
            p.add_argument("--count", type=int, required=True)
            p.add_argument("--concurrency", type=int, default=16)
            p.add_argument("--model", default="gpt")
            p.add_argument("--ids", required=True)
        if name == "wait":
            p.add_argument("--completed", type=int, required=True)
            p.add_argument("--timeout", type=float, default=300)
            p.add_argument("--since", type=float)
        if name == "verify":
            p.add_argument("--ids", required=True)
    args = parser.parse_args()
    {"submit": submit, "wait": wait, "verify": verify}[args.command](args)


if __name__ == "__main__":
    main()
