#!/usr/bin/env python3
# one session that must land on backend 'A'; 64-byte ping-pong as fast as it can for DUR seconds;
# writes "t_monotonic rtt_us" per round trip to OUT
import socket, sys, time, array
port, dur, out = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
while True:
    s = socket.create_connection(("127.0.0.1", port)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if s.recv(1) == b"A": break
    s.close()
print("probe on A", flush=True)
msg = b"x" * 64; ts = array.array("d"); rt = array.array("d")
mono = time.monotonic; end = mono() + dur
while True:
    t0 = mono()
    if t0 > end: break
    s.sendall(msg); got = 0
    while got < 64:
        d = s.recv(64 - got)
        if not d: raise SystemExit("closed")
        got += len(d)
    t1 = mono(); ts.append(t0); rt.append(t1 - t0)
with open(out, "w") as f:
    for a, b in zip(ts, rt): f.write(f"{a:.6f} {b*1e6:.1f}\n")
print("probe done", len(ts), "round trips", flush=True)
