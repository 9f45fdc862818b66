#!/usr/bin/env python3
# opens N idle sessions to PORT, checks the greeting byte of each (which backend), holds them until killed
import socket, sys, resource, time, collections, signal
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = []; tags = collections.Counter()
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port)); socks.append(s)
for s in socks:
    s.settimeout(5)
    try: tags[s.recv(1)] += 1
    except Exception as e: tags[repr(e)] += 1
print("opened", n, dict(tags), flush=True)
closed = 0
while True:
    time.sleep(1)
