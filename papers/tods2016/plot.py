#!/usr/bin/env python3
"""Draw the reproduction's plots from results.csv with gnuplot.

Writes one data file per protocol and sweep into DIR/data/, the gnuplot
scripts into DIR/plots/*.gp, and runs gnuplot on them to make the SVG
files beside them. Measured points are drawn as solid lines with points;
points the simulator did not run (too many ciphertexts to collect) are
the cost model's predictions, drawn dashed.

Usage: plot.py [--dir DIR] [--gnuplot PATH]
"""
import argparse
import csv
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PROTOCOLS = ["s_agg", "rnf_noise", "c_noise", "ed_hist", "shuffle"]
COLORS = {"s_agg": "#1b9e77", "rnf_noise": "#d95f02", "c_noise": "#7570b3",
          "ed_hist": "#e7298a", "shuffle": "#66a61e"}
# (file, sweep, x column, x label, y measured, y predicted, y label, ed_hist's histogram added)
PLOTS = [
    ("groups-bytes", "groups", "groups", "groups (GROUP BY)", "bytes", "pred_bytes",
     "bytes through the service", True),
    ("groups-cpu", "groups", "groups", "groups (GROUP BY)", "study_cpu_s", "pred_token_seconds",
     "CPU seconds of the whole study", False),
    ("groups-tasks", "groups", "groups", "groups (GROUP BY)", "tasks", "pred_tasks",
     "aggregation tasks (token sessions)", False),
    ("participants-bytes", "participants", "participants", "participants", "bytes", "pred_bytes",
     "bytes through the service", True),
    ("participants-cpu", "participants", "participants", "participants", "study_cpu_s",
     "pred_token_seconds", "CPU seconds of the whole study", False),
]


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=HERE)
    ap.add_argument("--gnuplot", default="gnuplot")
    a = ap.parse_args()
    with open(os.path.join(a.dir, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    os.makedirs(os.path.join(a.dir, "data"), exist_ok=True)
    os.makedirs(os.path.join(a.dir, "plots"), exist_ok=True)
    for name, sweep, xcol, xlabel, ycol, pcol, ylabel, with_hist in PLOTS:
        series = []
        for proto in PROTOCOLS:
            pts = [r for r in rows if r["sweep"] == sweep and r["protocol"] == proto]
            pts.sort(key=lambda r: num(r[xcol]))
            for kind in ("measured", "predicted"):
                path = os.path.join(a.dir, "data", "%s-%s-%s.dat" % (name, proto, kind))
                n = 0
                with open(path, "w") as out:
                    out.write("# %s %s (%s): %s %s\n" % (sweep, proto, kind, xcol, ycol))
                    for r in pts:
                        if kind == "measured" and r["mode"] == "measured" and r["ok"] == "1":
                            y = num(r[ycol])
                            if with_hist and num(r.get("hist_bytes")):
                                y += num(r["hist_bytes"])
                        elif kind == "predicted" and r["mode"] == "predicted":
                            y = num(r[pcol])
                        else:
                            continue
                        if y is None or y <= 0:
                            continue
                        out.write("%s %s\n" % (r[xcol], y))
                        n += 1
                if n:
                    series.append((proto, kind, path))
        gp = os.path.join(a.dir, "plots", name + ".gp")
        svg = name + ".svg"
        with open(gp, "w") as g:
            g.write("# %s: %s against %s, per protocol (plot.py wrote this)\n" % (name, ylabel,
                                                                                 xlabel))
            g.write("set terminal svg size 720,460 font 'sans,12' background '#ffffff'\n")
            g.write("set output '%s'\n" % svg)
            g.write("set logscale xy\nset grid\nset key left top\n")
            g.write("set xlabel '%s'\nset ylabel '%s'\n" % (xlabel, ylabel))
            if with_hist:
                g.write("set title 'ed_hist includes its histogram study' noenhanced\n")
            plots = []
            for proto, kind, path in series:
                rel = os.path.relpath(path, os.path.join(a.dir, "plots"))
                style = ("with linespoints lw 2 pt 7 ps 0.8" if kind == "measured"
                         else "with linespoints lw 2 dt 2 pt 6 ps 0.8")
                title = proto + (" (predicted)" if kind == "predicted" else "")
                plots.append("'%s' using 1:2 %s lc rgb '%s' title '%s' noenhanced" % (
                    rel, style, COLORS[proto], title))
            g.write("plot " + ", \\\n     ".join(plots) + "\n")
        subprocess.run([a.gnuplot, os.path.basename(gp)], cwd=os.path.join(a.dir, "plots"),
                       check=True)
        print("wrote plots/%s" % svg, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
