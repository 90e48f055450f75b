"""A fork server for the README examples: one interpreter imports the CLI, torch and open_clip once, and each
``mmsearch`` an example runs is a fork of it, with that command's arguments, folder, environment and
standard streams (passed over a Unix socket), exiting as the command would. Without it each of ~30 examples
spent ~6 s of one core importing torch (2.2 s), torchvision's ops and torch._dynamo (2.1 s) and timm (0.9 s).

The ``mmsearch`` on the examples' PATH is ``client``: it sends its argv, cwd, environment and fds 0-2 and
exits with the status the fork reports. What differs from the console script: the imports happened before
the command's environment was set (OpenMP reads its variables once, when torch loads it), and the forked
command starts with the zygote's modules in memory. Everything else (settings, files, output, exit codes)
is the command's own; ``serve`` and ``python -m mmsearch`` examples run the real thing.
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

CLIENT = '''import json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect({path!r})
request = {{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}
socket.send_fds(s, [json.dumps(request).encode()], [0, 1, 2])
status = s.recv(16)
sys.exit(int(status) if status else 1)
'''


def _run(request: dict) -> int:
    """In the fork: become the command, run it, return its exit status as the console script's would be."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["mmsearch", *request["argv"]]
    from mmsearch.cli import main
    try:
        main()
        return 0
    except SystemExit as exit:
        if exit.code is None or isinstance(exit.code, int):
            return exit.code or 0
        print(exit.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1


def serve(path: str) -> None:
    """Accept commands until killed; each in a fork of this process."""
    import open_clip  # noqa: F401  the imports every model-loading example paid for
    import mmsearch.cli  # noqa: F401
    import mmsearch.encoders.loading  # noqa: F401
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # forks are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(16)
    listener.settimeout(2.0)
    parent = os.getppid()
    print("ready", flush=True)
    while True:
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            if os.getppid() != parent:  # the test run is gone (killed): so is its server
                return
            continue
        connection.setblocking(True)
        message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
        if os.fork() == 0:
            listener.close()
            for n, fd in enumerate(fds):
                os.dup2(fd, n)
                os.close(fd)
            status = 1
            try:
                status = _run(json.loads(message))
                atexit._run_exitfuncs()  # what the interpreter's exit would run (os._exit runs none)
                sys.stdout.flush()
                sys.stderr.flush()
                connection.sendall(str(status).encode())
            finally:
                os._exit(status)
        for fd in fds:
            os.close(fd)
        connection.close()


class Zygote:
    """A started fork server and the folder holding its ``mmsearch`` client, to put first on PATH."""

    def __init__(self, folder: Path, env: dict[str, str]):
        folder.mkdir(parents=True, exist_ok=True)
        socket_path = str(folder / "zygote.sock")
        if len(socket_path.encode()) > 100:  # a Unix socket's path holds at most 107 bytes
            socket_path = os.path.join(tempfile.mkdtemp(prefix="mmz", dir="/tmp"), "sock")
        (folder / "mmsearch").write_text(f"#!{sys.executable} -S\n" + CLIENT.format(path=socket_path))
        (folder / "mmsearch").chmod(0o755)
        self.bin = str(folder)
        self.process = subprocess.Popen([sys.executable, __file__, socket_path], env=env, text=True,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the zygote did not start: {self.process.stderr.read()}")

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


if __name__ == "__main__":
    serve(sys.argv[1])
