#!/usr/bin/env python3
# runtime-stall (see ./run): with ferry, echo A/B and the sessions on B running, A ready:
# For each command: probe runs; quiet window; command at known monotonic time; collects output.
import subprocess, sys, time, json
import os
FERRY = os.environ["FERRY"]; DIR = os.environ["STALL_DIR"]; CONF = f"{DIR}/ferry.conf"
HERE = os.path.dirname(os.path.abspath(__file__))
tag = sys.argv[1]
cmds = [["state", "drain"], ["state", "ready"], ["weight", "5"], ["state", "maint", "--kill"]]
if len(sys.argv) > 2: cmds = [c.split() for c in sys.argv[2:]]
results = []
for i, c in enumerate(cmds):
    out = f"{DIR}/probe-{tag}-{i}.txt"
    p = subprocess.Popen(["python3", f"{HERE}/probe.py", "5700", "9", out])
    time.sleep(5.0)
    t0w = time.time(); t0 = time.monotonic()
    r = subprocess.run([FERRY, "-c", CONF, "ctl", "set", "server", "app/127.0.0.1:5702"] + c,
                       capture_output=True, text=True)
    t1 = time.monotonic()
    p.wait()
    results.append({"cmd": " ".join(c), "t0": t0, "t0w": t0w, "t1": t1, "rc": r.returncode,
                    "out": (r.stdout + r.stderr).strip(), "probe": out})
    print(results[-1], flush=True)
    time.sleep(1)
json.dump(results, open(f"{DIR}/cmds-{tag}.json", "w"), indent=1)
