"""A stand-in for the embedding child's side of its socket protocol (textual/embed_process.py), for tests
that need a child which dies, hangs or lies: :data:`PREAMBLE` connects and says hello; a test appends
its own loop, which reads each request's text count into ``n`` and answers (or not) with ``send``.
``arg`` is the script's first argument (a mode, a marker file)."""

import textwrap

PREAMBLE = textwrap.dedent('''
    import json, os, socket, struct, sys, time
    arg, config = sys.argv[1], json.loads(sys.argv[2])
    sock = socket.socket(fileno=config["fd"])
    def send(b): sock.sendall(struct.pack(">I", len(b)) + b)
    def recv(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk: sys.exit(0)
            buf += chunk
        return buf
    def texts(): return len(json.loads(recv(struct.unpack(">I", recv(4))[0]))["texts"])
    send(json.dumps({"ok": True, "dim": 384, "pid": os.getpid()}).encode())
''')
