#!/usr/bin/env python3
"""Reproduce the TODS 2016 paper's qualitative claims with cohort-sim.

Runs the simulator over two sweeps and writes one CSV row per point:

  groups        10,000 participants, tokens of 1 MiB, GROUP BY giving about
                1, 8, 128, 1,024 and 10,000 groups, every protocol;
  participants  GROUP BY region (128 groups), tokens of 64 KiB, 1,000 to
                1,000,000 participants, every protocol.

A point whose collection would exceed --budget ciphertexts (c_noise sends
buckets x tuples per participant) is not run: its row holds the cost
model's prediction only (mode "predicted"), which the plots draw apart.

Then the leakage table: every protocol at 10,000 participants, GROUP BY
sex, age_band and GROUP BY region, with --leakage (leakage.csv).

Usage: sweep.py [--sim PATH] [--out DIR] [--quick] [--budget N] [--repredict]
--quick runs a small grid (for checking the scripts, not for the README).
--repredict only recomputes the cost model's columns of an existing
results.csv (after a change to the model), running no study.
Needs only Python 3's standard library and a built cohort-sim.
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PROTOCOLS = ["s_agg", "rnf_noise", "c_noise", "ed_hist", "shuffle"]
GROUPS = [  # (label, GROUP BY) over the simulator's health table
    (1, None),
    (8, "age_band"),
    (128, "region"),
    (1024, "region, age_band"),
    (10000, "region, age"),
]
FIELDS = [
    "sweep", "protocol", "participants", "groups", "token_ram", "mode", "ok",
    "study_wall_s", "study_cpu_s", "aggregate_virtual_s", "bytes", "ciphertexts",
    "tasks", "steps", "peak_arena", "hist_bytes", "hist_tasks", "hist_wall_s",
    "pred_feasible", "pred_seconds", "pred_token_seconds", "pred_bytes",
    "pred_ciphertexts", "pred_tasks", "pred_steps", "pred_token_ram", "error",
]
LEAK_FIELDS = [
    "protocol", "groups", "participants", "tagged_ciphertexts", "distinct_tags",
    "tag_freq_min", "tag_freq_max", "tag_vs_truth_tv", "accuracy", "accuracy_ci",
    "prior_accuracy", "anon_min", "anon_p10", "anon_median", "mix_tv_max",
    "shuffle_rounds",
]


def sql_for(group_by):
    if group_by is None:
        return "SELECT COUNT(*), AVG(steps) FROM health"
    sql = "SELECT %s, COUNT(*), AVG(steps) FROM health GROUP BY %s" % (group_by, group_by)
    if group_by == "region, age":  # 128 x 78 = 9,984 groups: above the default bound of 4,096
        sql += " WITH (max_groups = 10000)"
    return sql


def sim_json(sim, args):
    """Run cohort-sim with --json; the parsed object, or (None, error)."""
    p = subprocess.run([sim, "--no-progress", "--json"] + args, capture_output=True, text=True)
    out = p.stdout.strip().splitlines()
    if not out:
        return None, (p.stderr.strip().splitlines() or ["no output"])[-1]
    try:
        return json.loads(out[0]), None
    except ValueError:
        return None, out[0][:200]


def set_predicted(row, pred):
    row.update(pred_feasible=int(bool(pred.get("feasible"))),
               pred_seconds=pred.get("seconds", ""),
               pred_token_seconds=pred.get("token_seconds", ""),
               pred_bytes=pred.get("bytes", ""), pred_ciphertexts=pred.get("ciphertexts", ""),
               pred_tasks=pred.get("tasks", ""), pred_steps=pred.get("steps", ""),
               pred_token_ram=pred.get("token_ram", ""))


def predicted(sim, n, ram, proto, sql):
    p = subprocess.run([sim, "--tokens", str(n), "--token-ram", str(ram), "--protocol", proto,
                        "--sql", sql, "--predict"], capture_output=True, text=True)
    if p.returncode != 0:
        return {}
    return json.loads(p.stdout)["predicted"]


def emit_per_participant(proto, groups):
    """Ciphertexts one participant sends (tuples_per_participant is 1 here)."""
    if proto == "rnf_noise":
        return 4  # one tuple and 3 fakes
    if proto == "c_noise":
        return min(groups, 4096)
    return 1


def point(sim, sweep, proto, n, groups, group_by, ram, budget, seed):
    sql = sql_for(group_by)
    row = {k: "" for k in FIELDS}
    row.update(sweep=sweep, protocol=proto, participants=n, groups=groups, token_ram=ram)
    set_predicted(row, predicted(sim, n, ram, proto, sql))
    if n * emit_per_participant(proto, groups) > budget:
        row.update(mode="predicted", ok="")
        return row
    t0 = time.time()
    j, err = sim_json(sim, ["--tokens", str(n), "--seed", str(seed), "--token-ram", str(ram),
                            "--protocol", proto, "--sql", sql])
    row["mode"] = "measured"
    if j is None:
        row.update(ok=0, error=err)
        return row
    s = j["service"]
    row.update(ok=int(bool(j["ok"])), study_wall_s=j["time"]["study_wall_s"],
               study_cpu_s=j["time"]["study_cpu_s"],
               aggregate_virtual_s=j["time"].get("aggregate_virtual_s", ""),
               bytes=s["bytes_in"] + s["bytes_out"], ciphertexts=s["ciphertexts"],
               tasks=s["partitions"], steps=s["levels"], peak_arena=j["memory"]["peak_arena"],
               error=(j.get("error") or "")[:200])
    h = j.get("histogram")
    if h:
        row.update(hist_bytes=h["bytes"], hist_tasks=h["tasks"], hist_wall_s=h["wall_s"])
    print("  %-9s n=%-8d g=%-6d %-9s %5.1f s  %s" % (
        proto, n, groups, "ok" if row["ok"] else "FAILED", time.time() - t0,
        row["error"]), file=sys.stderr)
    return row


def leak_point(sim, proto, n, groups, group_by, seed):
    j, err = sim_json(sim, ["--tokens", str(n), "--seed", str(seed), "--protocol", proto,
                            "--leakage", "--sql", sql_for(group_by)])
    if j is None or "leakage" not in j:
        print("  leakage %s g=%d FAILED: %s" % (proto, groups, err), file=sys.stderr)
        return None
    l = j["leakage"]
    return {
        "protocol": proto, "groups": groups, "participants": n,
        "tagged_ciphertexts": l["tagged_ciphertexts"], "distinct_tags": l["distinct_tags"],
        "tag_freq_min": l["tag_freq_min"], "tag_freq_max": l["tag_freq_max"],
        "tag_vs_truth_tv": l["tag_vs_truth_tv"], "accuracy": l["accuracy"],
        "accuracy_ci": l["accuracy_ci"], "prior_accuracy": l["prior_accuracy"],
        "anon_min": l["anon_min"], "anon_p10": l["anon_p10"], "anon_median": l["anon_median"],
        "mix_tv_max": l["mix_tv_max"], "shuffle_rounds": l["shuffle_rounds"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sim", default=os.path.join(ROOT, "build", "sim", "cohort-sim"))
    ap.add_argument("--out", default=HERE)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--budget", type=int, default=3_000_000,
                    help="most ciphertexts one measured point may collect")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repredict", action="store_true")
    a = ap.parse_args()
    if not os.access(a.sim, os.X_OK):
        sys.exit("sweep: no cohort-sim at %s: build first (scripts/build.sh)" % a.sim)
    if a.repredict:
        path = os.path.join(a.out, "results.csv")
        with open(path) as f:
            rows = list(csv.DictReader(f))
        gb = dict(GROUPS)
        for r in rows:
            groups = int(r["groups"])
            by = "region" if r["sweep"] == "participants" else gb[groups]
            set_predicted(r, predicted(a.sim, int(r["participants"]), int(r["token_ram"]),
                                       r["protocol"], sql_for(by)))
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            w.writerows(rows)
        return 0
    g_n, g_ram = (1000, 1 << 20) if a.quick else (10000, 1 << 20)
    n_list = [300, 1000] if a.quick else [1000, 10000, 100000, 1000000]
    rows = []
    print("groups sweep: %d participants" % g_n, file=sys.stderr)
    for groups, gb in GROUPS:
        for proto in PROTOCOLS:
            rows.append(point(a.sim, "groups", proto, g_n, groups, gb, g_ram, a.budget, a.seed))
    print("participants sweep: GROUP BY region", file=sys.stderr)
    for n in n_list:
        for proto in PROTOCOLS:
            rows.append(point(a.sim, "participants", proto, n, 128, "region", 65536, a.budget,
                              a.seed))
    with open(os.path.join(a.out, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    leaks = []
    print("leakage", file=sys.stderr)
    for groups, gb in [(14, "sex, age_band"), (128, "region")]:
        for proto in PROTOCOLS:
            r = leak_point(a.sim, proto, 1000 if a.quick else 10000, groups, gb, a.seed)
            if r:
                leaks.append(r)
    with open(os.path.join(a.out, "leakage.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LEAK_FIELDS)
        w.writeheader()
        w.writerows(leaks)
    failed = [r for r in rows if r["mode"] == "measured" and not r["ok"]]
    print("%d points, %d measured, %d failed" % (
        len(rows), sum(r["mode"] == "measured" for r in rows), len(failed)), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
