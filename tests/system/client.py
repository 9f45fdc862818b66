# A client inside the test container. `client.py PORT`: one echo round trip through ferry,
# exit 0 when the bytes came back. `client.py PORT --hold GO RESULT`: a round trip, then
# "connected" in RESULT, then waits for the file GO to appear and does a second round trip on
# the same connection, writing "ok" or the error to RESULT (a connection held across a reload).
import os
import socket
import sys
import time


def round_trip(sock, text):
    sock.sendall(text)
    got = b""
    while len(got) < len(text):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by ferry after %d bytes" % len(got))
        got += chunk
    if got != text:
        raise ValueError("echo mismatch")


def main():
    port = int(sys.argv[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    round_trip(sock, b"hello through ferry\n")
    if len(sys.argv) < 3:
        return 0
    go, result = sys.argv[3], sys.argv[4]
    with open(result, "w") as f:
        f.write("connected\n")
    deadline = time.monotonic() + 120
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        round_trip(sock, b"still here after the reload\n")
        outcome = "ok\n"
    except Exception as e:  # the reason goes to the result file
        outcome = "failed: %s\n" % e
    with open(result + ".tmp", "w") as f:
        f.write(outcome)
    os.rename(result + ".tmp", result)
    return 0


sys.exit(main())
