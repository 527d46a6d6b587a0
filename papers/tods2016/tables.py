#!/usr/bin/env python3
"""Print the reproduction's tables (Markdown) from results.csv and leakage.csv.

Usage: tables.py [--dir DIR] [leakage|groups|participants]...
With no table named, prints all three. The README's tables are its output.
"""
import argparse
import csv
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PROTOCOLS = ["s_agg", "rnf_noise", "c_noise", "ed_hist", "shuffle"]


def f(v, fmt="%.3g"):
    try:
        return fmt % float(v)
    except (TypeError, ValueError):
        return "-"


def mib(v):
    try:
        return "%.1f" % (float(v) / (1 << 20))
    except (TypeError, ValueError):
        return "-"


def leakage(d):
    with open(os.path.join(d, "leakage.csv")) as fh:
        rows = list(csv.DictReader(fh))
    print("| groups | protocol | tags seen (min-max per tag) | tag histogram vs truth (TV) "
          "| linking accuracy | guessing from the frequencies | anonymity set (min / median) "
          "| shuffle mixing (TV max) |")
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        tags = "none" if r["tagged_ciphertexts"] in ("0", "") else "%s (%s-%s)" % (
            r["distinct_tags"], r["tag_freq_min"], r["tag_freq_max"])
        acc = "%s +- %s" % (f(r["accuracy"], "%.3f"), f(r["accuracy_ci"], "%.3f"))
        print("| %s | %s | %s | %s | %s | %s | %s / %s | %s |" % (
            r["groups"], r["protocol"], tags,
            "-" if r["tagged_ciphertexts"] in ("0", "") else f(r["tag_vs_truth_tv"], "%.3f"),
            acc, f(r["prior_accuracy"], "%.3f"), f(r["anon_min"], "%.0f"),
            f(r["anon_median"], "%.0f"),
            f(r["mix_tv_max"], "%.4f") if r["protocol"] == "shuffle" else "-"))


def sweep(d, which):
    with open(os.path.join(d, "results.csv")) as fh:
        rows = [r for r in csv.DictReader(fh) if r["sweep"] == which]
    key = "groups" if which == "groups" else "participants"
    print("| %s | protocol | run | MiB through the service | of which the histogram "
          "| CPU s (whole study) | tasks | steps | token RAM used | predicted MiB | "
          "predicted tasks |" % key)
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows.sort(key=lambda r: (int(r[key]), PROTOCOLS.index(r["protocol"])))
    for r in rows:
        measured = r["mode"] == "measured"
        ok = measured and r["ok"] == "1"
        total = None
        if ok:
            total = float(r["bytes"]) + (float(r["hist_bytes"]) if r["hist_bytes"] else 0)
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r[key], r["protocol"],
            "measured" if ok else ("failed" if measured else "predicted"),
            mib(total) if ok else "-", mib(r["hist_bytes"]) if ok and r["hist_bytes"] else "-",
            f(r["study_cpu_s"], "%.2f") if ok else "-", r["tasks"] if ok else "-",
            r["steps"] if ok else "-", r["peak_arena"] if ok else "-", mib(r["pred_bytes"]),
            r["pred_tasks"] or "-"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=HERE)
    ap.add_argument("tables", nargs="*")
    a = ap.parse_args()
    for t in a.tables or ["leakage", "groups", "participants"]:
        if t == "leakage":
            leakage(a.dir)
        elif t in ("groups", "participants"):
            sweep(a.dir, t)
        else:
            sys.exit("tables: unknown table %s" % t)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
