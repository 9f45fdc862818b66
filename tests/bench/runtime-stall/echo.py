#!/usr/bin/env python3
# epoll echo server: sends one greeting byte (argv[2]) on accept, then echoes. Holds any number of fds.
import socket, select, sys, resource
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
port, tag = int(sys.argv[1]), sys.argv[2].encode()
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", port)); ls.listen(65535); ls.setblocking(False)
ep = select.epoll(); ep.register(ls.fileno(), select.EPOLLIN)
conns = {}
while True:
    for fd, ev in ep.poll():
        if fd == ls.fileno():
            while True:
                try: c, _ = ls.accept()
                except BlockingIOError: break
                c.setblocking(False); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try: c.send(tag)
                except OSError: pass
                conns[c.fileno()] = c; ep.register(c.fileno(), select.EPOLLIN)
        else:
            c = conns[fd]
            try: d = c.recv(65536)
            except (BlockingIOError, ConnectionError): d = b"" if not isinstance(sys.exc_info()[1], BlockingIOError) else None
            if d is None: continue
            if not d:
                ep.unregister(fd); c.close(); del conns[fd]; continue
            try: c.sendall(d)
            except OSError: pass
