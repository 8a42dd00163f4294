"""One long-lived exec per fake Dom0 that runs the lab's commands: a docker exec costs half a
second under emulation (four API calls into the VM and a runc start), a command run by a
process already inside the container costs a fork and an exec.

A session is ``python3`` started by one docker exec, its stdin and stdout attached. It reads
one request a line (JSON: argv, environment, input) and answers one line (exit code, stdout,
stderr), running each command as its own session leader with stdin from /dev/null unless
input is given, exactly as a docker exec of that argv would: the container's environment
plus the request's, its working directory, the exit code 128+N of a command killed by
signal N. The lab's runner (``DockerRunner``) keeps idle sessions per container in a pool,
so commands run side by side each get one of their own.

The server's code travels over stdin, so its command line (``python3 -u -c ...``) names
nothing a test or a leak check looks for.
"""

from __future__ import annotations

import base64
import json
import socket
import struct
import threading
import time
from collections.abc import Callable

# docker's non-tty exec stream: frames of stream id, 3 pad bytes, payload length, payload
FRAME_HEADER = struct.Struct(">BxxxL")

BOOTSTRAP = ["python3", "-u", "-c",
             "import sys, base64; exec(base64.b64decode(sys.stdin.readline()))"]

SERVER = r'''
import base64, json, os, signal, subprocess, sys

def answer(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

answer({"ready": os.getpid()})
while True:
    line = sys.stdin.readline()
    if not line:
        break
    req = json.loads(line)
    env = dict(os.environ)
    env.update(req["env"])
    data = req["input"]
    try:
        proc = subprocess.run(
            req["argv"], env=env, start_new_session=True,
            stdin=subprocess.DEVNULL if data is None else None,
            input=None if data is None else base64.b64decode(data),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
        if code < 0:
            code = 128 - code
    except OSError as exc:
        code, out = (127 if isinstance(exc, FileNotFoundError) else 126), b""
        err = ("exec %s: %s\n" % (req["argv"][0], exc.strerror)).encode()
    answer({"code": code, "out": base64.b64encode(out).decode(),
            "err": base64.b64encode(err).decode()})
'''


class SessionLost(Exception):
    """The session ended or stopped answering; what its command did is unknown."""


class Session:
    """One server process in one container, reached through its exec's socket."""

    def __init__(self, api, container: str, environment: dict[str, str]) -> None:
        self.container = container
        exec_id = api.exec_create(container, BOOTSTRAP, stdout=True, stderr=True, stdin=True,
                                  tty=False, environment=environment)["Id"]
        self._sock_obj = api.exec_start(exec_id, socket=True)
        self._sock: socket.socket = getattr(self._sock_obj, "_sock", self._sock_obj)
        self._buf = b""
        self._line = b""
        self.stderr = b""  # the server's own complaints, for the error message
        self._send(base64.b64encode(SERVER.encode()) + b"\n")
        ready = self._reply(time.monotonic() + 120)
        if "ready" not in ready:
            raise SessionLost(f"the exec session in {container} did not start")

    def _send(self, data: bytes) -> None:
        try:
            self._sock.settimeout(60)
            self._sock.sendall(data)
        except OSError as exc:
            raise SessionLost(f"the exec session in {self.container} is gone ({exc})") from None

    def _reply(self, deadline: float | None) -> dict:
        """The next answer line from stdout, demultiplexed from the exec's stream."""
        while b"\n" not in self._line:
            while len(self._buf) < FRAME_HEADER.size or \
                    len(self._buf) < FRAME_HEADER.size + FRAME_HEADER.unpack_from(self._buf)[1]:
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError
                    self._sock.settimeout(left)
                else:
                    self._sock.settimeout(None)
                try:
                    chunk = self._sock.recv(1 << 20)
                except TimeoutError:
                    raise
                except OSError as exc:
                    raise SessionLost(f"the exec session in {self.container} broke ({exc})") \
                        from None
                if not chunk:
                    raise SessionLost(f"the exec session in {self.container} ended"
                                      + (f": {self.stderr.decode(errors='replace')[-500:]}"
                                         if self.stderr else ""))
                self._buf += chunk
            stream, size = FRAME_HEADER.unpack_from(self._buf)
            payload = self._buf[FRAME_HEADER.size:FRAME_HEADER.size + size]
            self._buf = self._buf[FRAME_HEADER.size + size:]
            if stream == 1:
                self._line += payload
            else:
                self.stderr = (self.stderr + payload)[-4096:]
        line, _, self._line = self._line.partition(b"\n")
        return json.loads(line)

    def call(self, argv: list[str], env: dict[str, str], input: bytes | None,
             deadline: float | None) -> tuple[int, bytes, bytes]:
        """Run one command; TimeoutError at the deadline (the session is then unusable)."""
        request = {"argv": argv, "env": env,
                   "input": None if input is None else base64.b64encode(input).decode()}
        self._send(json.dumps(request).encode() + b"\n")
        reply = self._reply(deadline)
        return (int(reply["code"]), base64.b64decode(reply["out"]),
                base64.b64decode(reply["err"]))

    def close(self) -> None:
        """Close the exec's socket, which ends the session; a socket already gone is no error."""
        for obj in {id(self._sock): self._sock, id(self._sock_obj): self._sock_obj}.values():
            try:
                obj.close()
            except OSError:
                pass


class SessionPool:
    """Idle sessions by container; a busy one is never handed out twice.

    A session outlives the SDK client that started it (it is only a socket), so any
    runner of the container may use it. The lab has one engine, so the container's
    name is enough.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[str, list[Session]] = {}

    def take(self, container: str, make: Callable[[], Session]) -> Session:
        """An idle session of ``container``, or a new one from ``make`` when none is idle."""
        with self._lock:
            idle = self._idle.get(container)
            if idle:
                return idle.pop()
        return make()

    def give_back(self, session: Session) -> None:
        """Put a session back, idle, for the next command in its container."""
        with self._lock:
            self._idle.setdefault(session.container, []).append(session)

    def idle(self, container: str) -> int:
        """How many sessions of ``container`` are idle."""
        with self._lock:
            return len(self._idle.get(container, ()))

    def close_all(self) -> None:
        """Close every idle session (the sandbox is going, or coming anew)."""
        with self._lock:
            sessions = [s for idle in self._idle.values() for s in idle]
            self._idle.clear()
        for s in sessions:
            s.close()


POOL = SessionPool()
