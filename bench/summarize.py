#!/usr/bin/env python3
"""Summarise a bench/run.sh run (the floodgate-bench/1 JSON reports) as Markdown.

    summarize.py OUT_DIR                      the summary tables, targets checked
    summarize.py --max-throughput OUT target  best closed-loop ok/s of a target (integer)
    summarize.py --clean REPORT.json          exit 0 if the run had no errors and no drops
"""

import glob
import json
import os
import sys

TARGETS = ["direct", "nginx", "floodgate", "litellm"]


def load(path):
    with open(path) as f:
        return json.load(f)


def reports(out, prefix):
    """{(step, target): report} for files named <prefix>...-<target>.json."""
    found = {}
    for path in glob.glob(os.path.join(out, prefix + "*.json")):
        name = os.path.basename(path)[: -len(".json")]
        step, target = name.rsplit("-", 1)
        found[(step, target)] = load(path)
    return found


def failures(report):
    return report["totals"]["errors"] + report["totals"]["dropped"]


def lat(report, field, q):
    summary = report.get(field)
    return summary[q] if summary else None


def fmt_ms(value):
    return "–" if value is None else (f"{value:.2f}" if value < 100 else f"{value:.0f}")


def fmt_delta(value):
    return "–" if value is None else f"{value:+.2f}"


def ratio(a, b):
    return "–" if not a or not b else f"{a / b:.2f}×"


def error_text(report):
    parts = [f"{status}: {n}" for status, n in report["errors_by_status"].items()]
    parts += [f"{kind}: {n}" for kind, n in report["errors_by_kind"].items()]
    return ", ".join(parts) if parts else "0"


def max_throughput(out, target):
    runs = reports(out, "s1-c")
    return int(max((r["totals"]["ok_per_s"] for (_, t), r in runs.items() if t == target), default=0))


def section_throughput(out, lines):
    runs = reports(out, "s1-c")
    lines += [
        "### 1a. Small non-streaming completions, closed loop: maximum throughput (ok req/s)",
        "",
        "| concurrency | direct | nginx | floodgate | litellm | floodgate / nginx | floodgate / litellm | errors (floodgate) |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    best = {t: 0.0 for t in TARGETS}
    for c in sorted({int(step[len("s1-c"):]) for step, _ in runs}):
        row = {t: runs.get((f"s1-c{c}", t)) for t in TARGETS}
        rate = {t: (r["totals"]["ok_per_s"] if r else None) for t, r in row.items()}
        for t, v in rate.items():
            if v:
                best[t] = max(best[t], v)
        cells = " | ".join(f"{rate[t]:,.0f}" if rate[t] is not None else "–" for t in TARGETS)
        fg_errors = error_text(row["floodgate"]) if row["floodgate"] else "–"
        lines.append(
            f"| {c} | {cells} | {ratio(rate['floodgate'], rate['nginx'])} | "
            f"{ratio(rate['floodgate'], rate['litellm'])} | {fg_errors} |"
        )
    lines.append("")
    return best


def section_rates(out, lines):
    runs = reports(out, "s1-r")
    lines += [
        "### 1b. Small non-streaming completions at fixed rates (open loop, latency from the intended send time)",
        "",
        "| rate | target | ok req/s | p50 ms | p99 ms | added p50 | added p99 | errors + drops |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    clean_nginx_rates = []
    for r in sorted({int(step[len("s1-r"):]) for step, _ in runs}):
        direct = runs.get((f"s1-r{r}", "direct"))
        for t in TARGETS:
            rep = runs.get((f"s1-r{r}", t))
            if not rep:
                continue
            p50, p99 = lat(rep, "latency_ms", "p50"), lat(rep, "latency_ms", "p99")
            added50 = added99 = None
            if direct and t != "direct" and p50 is not None:
                added50 = p50 - lat(direct, "latency_ms", "p50")
                added99 = p99 - lat(direct, "latency_ms", "p99")
            fails = failures(rep)
            lines.append(
                f"| {r} | {t} | {rep['totals']['ok_per_s']:,.0f} | {fmt_ms(p50)} | {fmt_ms(p99)} | "
                f"{fmt_delta(added50)} | {fmt_delta(added99)} | {error_text(rep) if fails else 0} |"
            )
            if t == "nginx" and fails == 0:
                clean_nginx_rates.append(r)
    lines.append("")
    return runs, clean_nginx_rates


def section_streams(out, lines):
    runs = reports(out, "s2-r")
    lines += [
        "### 2. Streaming completions (20 chunks, 5 ms apart) at fixed rates",
        "",
        "| rate | target | ok req/s | TTFT p50 | TTFT p99 | total p50 | total p99 | added TTFT p99 | errors + drops |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted({int(step[len("s2-r"):]) for step, _ in runs}):
        direct = runs.get((f"s2-r{r}", "direct"))
        for t in TARGETS:
            rep = runs.get((f"s2-r{r}", t))
            if not rep:
                continue
            t99 = lat(rep, "ttft_ms", "p99")
            added = None
            if direct and t != "direct" and t99 is not None and lat(direct, "ttft_ms", "p99") is not None:
                added = t99 - lat(direct, "ttft_ms", "p99")
            lines.append(
                f"| {r} | {t} | {rep['totals']['ok_per_s']:,.0f} | {fmt_ms(lat(rep, 'ttft_ms', 'p50'))} | "
                f"{fmt_ms(t99)} | {fmt_ms(lat(rep, 'latency_ms', 'p50'))} | {fmt_ms(lat(rep, 'latency_ms', 'p99'))} | "
                f"{fmt_delta(added)} | {error_text(rep) if failures(rep) else 0} |"
            )
    lines.append("")


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def section_many_streams(out, lines, idle):
    runs = reports(out, "s3-streams")
    peaks = {p["step"]: p for p in read_jsonl(os.path.join(out, "rss-peak.jsonl"))}
    lines += [
        "### 3. Many concurrent slow streams (a chunk a second for 60 s)",
        "",
        "| through | streams held | completed | errors | peak RSS | RSS growth per stream |",
        "|---|---:|---:|---|---:|---:|",
    ]
    results = {}
    for (_, t), rep in sorted(runs.items()):
        n = rep["config"]["concurrency"]
        peak = next((p for s, p in peaks.items() if s.startswith("streams-") and s.endswith(t)), None)
        key = f"{t}_kib"
        peak_kib = peak[key] if peak else None
        per = None
        if peak_kib is not None:
            # Growth over the RSS at the start of this step, per stream.
            per = (peak_kib - peak.get(f"{t}_base_kib", idle.get(key, 0))) * 1024 / n
        lines.append(
            f"| {t} | {n:,} | {rep['totals']['ok']:,} | {error_text(rep)} | "
            f"{'–' if peak_kib is None else f'{peak_kib / 1024:.0f} MiB'} | "
            f"{'–' if per is None else f'{per / 1024:.1f} KiB'} |"
        )
        results[t] = (n, rep)
    lines.append("")
    return results


def section_rss(out, lines, idle):
    peaks = {p["step"]: p for p in read_jsonl(os.path.join(out, "rss-peak.jsonl"))}
    lines += [
        "### 4. Memory (RSS, each process with its workers)",
        "",
        "| process | idle | under load (c=64, peak) |",
        "|---|---:|---:|",
    ]
    for t in ["floodgate", "nginx", "litellm"]:
        load = peaks.get(f"load-c64-{t}", {}).get(f"{t}_kib")
        lines.append(
            f"| {t} | {idle.get(f'{t}_kib', 0) / 1024:.1f} MiB | "
            f"{'–' if load is None else f'{load / 1024:.1f} MiB'} |"
        )
    lines.append("")


def summary(out):
    lines = [f"## Run {os.path.basename(os.path.normpath(out))}", ""]
    rss = {p["step"]: p for p in read_jsonl(os.path.join(out, "rss.jsonl"))}
    idle = rss.get("idle", {})
    best = section_throughput(out, lines)
    rate_runs, clean_nginx = section_rates(out, lines)
    section_streams(out, lines)
    streams = section_many_streams(out, lines, idle)
    section_rss(out, lines, idle)

    lines += ["### Targets", ""]
    fg, ng, ll = best["floodgate"], best["nginx"], best["litellm"]
    if fg and ng:
        lines.append(f"- floodgate max throughput ≥ 0.8× nginx: {fg:,.0f} / {ng:,.0f} = **{fg / ng:.2f}×** "
                     f"({'met' if fg >= 0.8 * ng else 'missed'})")
    if fg and ll:
        lines.append(f"- floodgate max throughput ≥ 50× LiteLLM: {fg:,.0f} / {ll:,.0f} = **{fg / ll:.0f}×** "
                     f"({'met' if fg >= 50 * ll else 'missed'})")
    if clean_nginx:
        r = max(clean_nginx)
        fg_rep, direct = rate_runs.get((f"s1-r{r}", "floodgate")), rate_runs.get((f"s1-r{r}", "direct"))
        if fg_rep and direct:
            added = lat(fg_rep, "latency_ms", "p99") - lat(direct, "latency_ms", "p99")
            lines.append(f"- p99 added latency ≤ 1 ms at the highest fixed rate nginx sustained without errors "
                         f"here ({r:,} req/s): **{added:+.2f} ms** ({'met' if added <= 1.0 else 'missed'}; "
                         f"floodgate errors + drops: {failures(fg_rep)})")
    if "floodgate" in streams:
        n, rep = streams["floodgate"]
        ok = rep["totals"]["errors"] == 0 and rep["totals"]["dropped"] == 0
        lines.append(f"- {n:,} concurrent streams through one node with zero errors: "
                     f"**{rep['totals']['errors']} errors** ({'met' if ok else 'missed'})")
    lines.append("")
    return "\n".join(lines)


def main(argv):
    if len(argv) == 3 and argv[0] == "--max-throughput":
        print(max_throughput(argv[1], argv[2]))
        return 0
    if len(argv) == 2 and argv[0] == "--clean":
        return 0 if failures(load(argv[1])) == 0 else 1
    if len(argv) == 1:
        print(summary(argv[0]))
        return 0
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
