#!/usr/bin/env python3
# runtime-stall (see ./run): the probe's longest round trip around each command against a quiet window.
import json, os, sys
DIR = os.environ["STALL_DIR"]
for tag in sys.argv[1:]:
    for r in json.load(open(f"{DIR}/cmds-{tag}.json")):
        rows = [tuple(map(float, l.split())) for l in open(r["probe"])]
        t0 = r["t0"]
        def mx(a, b):
            w = [(rt, t) for t, rt in rows if a <= t < b or (t < a and t + rt / 1e6 > a)]
            return max(w) if w else (float("nan"), 0), len(w)
        (q, qt), qn = mx(t0 - 3, t0 - 1)
        (d, dt), dn = mx(t0 - 1, t0 + 1)
        w = sorted(rt for t, rt in rows if t0 - 3 <= t < t0 - 1)
        p99 = w[int(len(w) * .99)] if w else float("nan")
        print(f"{tag} | {r['cmd']} | quiet max {q/1000:.2f} ms (p99 {p99:.0f} us, n={qn}) | "
              f"around max {d/1000:.2f} ms at t0{dt - t0:+.4f}s (n={dn}) | cmd wall {1000*(r['t1']-t0):.1f} ms | {r['out']}")
