"""Joining the processes of one run (`python -m jaxfit.run --distributed HOST:PORT,N,I`) without
hanging: before `jax.distributed.initialize` (whose failures are a C++ abort after minutes of
silence), the processes meet in a small handshake of their own on the coordinator's address,
with a timeout, a line every few seconds saying whom they wait for, and one-line errors.

Process 0 listens on HOST:PORT, each other process connects and says `N I`; process 0 checks
that every index 1..N-1 came exactly once with the same N, answers `ok` to all, closes the
socket, and JAX's coordinator takes the port. Host code only.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable

JOIN_TIMEOUT_S = 300.0  # JAX's own initialization timeout
REPORT_EVERY_S = 15.0  # a waiting line this often (the first after FIRST_REPORT_S)
FIRST_REPORT_S = 2.0
HELLO = "jaxfit-join"


class JoinError(Exception):
    """The processes could not be joined (one line)."""


def join(
    coordinator: str | None,
    n_processes: int | None,
    process_id: int | None,
    timeout_s: float = JOIN_TIMEOUT_S,
    say: Callable[[str], None] | None = None,
) -> int:
    """Meet the other processes, then start jax.distributed; this process's index. `None`s: JAX
    detects the cluster (SLURM, Open MPI, ...), and the handshake uses what it detected."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    if coordinator is None:
        found = detect()
        if found is None:  # a JAX whose cluster detection we cannot call: JAX joins on its own
            return _initialize(None, None, None, int(timeout_s))
        coordinator, n_processes, process_id = found
    assert n_processes is not None and process_id is not None  # given with the coordinator, or detected with it
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise JoinError(f"{coordinator!r}: the coordinator must be HOST:PORT")
    deadline = time.monotonic() + timeout_s
    if n_processes > 1:
        within = f"within {timeout_s:g} s (--join-timeout)"
        if process_id == 0:
            _gather(int(port), n_processes, deadline, say, coordinator, within)
        else:
            _report_in(host, int(port), n_processes, process_id, deadline, say, coordinator, within)
    return _initialize(coordinator, n_processes, process_id, max(int(deadline - time.monotonic()), 30))


def _initialize(coordinator: str | None, n_processes: int | None, process_id: int | None, timeout_s: int) -> int:
    """jax.distributed.initialize; this process's index."""
    import jax

    try:
        jax.distributed.initialize(coordinator, n_processes, process_id, initialization_timeout=timeout_s)
    except Exception as error:  # noqa: BLE001 -- a port in use, no cluster: one line
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise JoinError(f"could not start jax.distributed ({type(error).__name__}: {first})") from None
    return jax.process_index()


def detect() -> tuple[str, int, int] | None:
    """The coordinator, process count and index JAX's cluster detection finds (SLURM, Open MPI...);
    None where this JAX's detection cannot be called (a private API)."""
    try:
        from jax._src import clusters

        detect_params = clusters.ClusterEnv.auto_detect_unset_distributed_params
    except (ImportError, AttributeError):
        return None
    try:
        found = detect_params(None, None, None, None, None, None)
    except TypeError:  # another signature
        return None
    except Exception as error:  # noqa: BLE001 -- no cluster environment found
        raise JoinError(f"'auto' found no cluster to join ({type(error).__name__}: {str(error)[:200]}); give HOST:PORT,N,I") from None
    coordinator, n_processes, process_id = found[:3]
    if coordinator is None or n_processes is None or process_id is None:
        raise JoinError("'auto' found no cluster to join (no SLURM, Open MPI or other environment JAX knows); give HOST:PORT,N,I")
    return coordinator, int(n_processes), int(process_id)


def _gather(port: int, n_processes: int, deadline: float, say: Callable[[str], None], coordinator: str, within: str) -> None:
    """Process 0: wait for processes 1..N-1, each exactly once, then tell them all to go on."""
    server = socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        if server.family == socket.AF_INET6:
            server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        server.bind(("::" if server.family == socket.AF_INET6 else "", port))
        server.listen(n_processes)
    except OSError as error:
        server.close()
        raise JoinError(
            f"process 0 cannot listen on port {port} ({error.strerror}): another process 0, or another program, "
            "holds it; choose another port"
        ) from None
    joined: dict[int, socket.socket] = {}
    last_report = time.monotonic() - REPORT_EVERY_S + FIRST_REPORT_S
    try:
        while len(joined) < n_processes - 1:
            now = time.monotonic()
            missing = [i for i in range(1, n_processes) if i not in joined]
            if now >= deadline:
                raise JoinError(
                    f"process 0: process(es) {_listed(missing)} of {n_processes} did not join at {coordinator} {within}; "
                    "start them with the same HOST:PORT,N"
                )
            if now - last_report >= REPORT_EVERY_S:
                say(
                    f"--distributed: process 0 waiting at {coordinator} for process(es) {_listed(missing)} of {n_processes} "
                    f"({int(deadline - now)} s left)"
                )
                last_report = now
            server.settimeout(min(1.0, max(deadline - now, 0.01)))
            try:
                peer, address = server.accept()
            except TimeoutError:
                continue
            peer.settimeout(5.0)
            try:
                words = _read_line(peer).split()
            except TimeoutError:
                words = []
            if len(words) != 3 or words[0] != HELLO or not words[1].isdigit() or not words[2].isdigit():
                peer.close()  # not one of ours (a port scanner, a stray connection)
                continue
            their_n, index = int(words[1]), int(words[2])
            problem = None
            if their_n != n_processes:
                problem = f"a process at {address[0]} says N = {their_n}, process 0 says N = {n_processes}"
            elif not 0 < index < n_processes:
                problem = f"a process at {address[0]} claims index {index}, not one of 1..{n_processes - 1}"
            elif index in joined:
                problem = f"two processes claim index {index} (the second from {address[0]})"
            if problem:
                for sock in (peer, *joined.values()):
                    _send(sock, f"error {problem}")
                raise JoinError(f"{problem}; give each process its own index 0..N-1 and the same N")
            joined[index] = peer
        for sock in joined.values():
            _send(sock, "ok")
        for sock in joined.values():  # they close first, so the port is free for JAX's coordinator
            sock.settimeout(5.0)
            try:
                sock.recv(1)
            except OSError:
                pass
    finally:
        for sock in joined.values():
            sock.close()
        server.close()


def _report_in(
    host: str, port: int, n_processes: int, process_id: int, deadline: float, say: Callable[[str], None], coordinator: str, within: str
) -> None:
    """Process I > 0: reach process 0 (retrying until the deadline), say who we are, await its answer."""
    last_report, sock = time.monotonic() - REPORT_EVERY_S + FIRST_REPORT_S, None
    while sock is None:
        now = time.monotonic()
        try:
            sock = socket.create_connection((host, port), timeout=min(5.0, max(deadline - now, 0.1)))
        except OSError as error:
            if now >= deadline:
                raise JoinError(
                    f"process {process_id} could not reach process 0 at {coordinator} {within} "
                    f"({error.strerror or error}); start process 0 there, or check HOST:PORT"
                ) from None
            if now - last_report >= REPORT_EVERY_S:
                say(f"--distributed: process {process_id} waiting to reach process 0 at {coordinator} ({int(deadline - now)} s left)")
                last_report = now
            time.sleep(0.2)
    try:
        _send(sock, f"{HELLO} {n_processes} {process_id}")
        answer = ""
        while not answer:
            now = time.monotonic()
            if now >= deadline:
                raise JoinError(
                    f"process {process_id} reached process 0 at {coordinator}, but the other processes did not all join {within}"
                )
            if now - last_report >= REPORT_EVERY_S:
                say(f"--distributed: process {process_id} joined; waiting for the others ({int(deadline - now)} s left)")
                last_report = now
            sock.settimeout(min(1.0, max(deadline - now, 0.01)))
            try:
                answer = _read_line(sock)
            except TimeoutError:
                continue
            if not answer:
                raise JoinError(f"process 0 at {coordinator} closed the connection before every process joined")
        if answer != "ok":
            raise JoinError(answer.removeprefix("error ") + "; give each process its own index 0..N-1 and the same N")
    finally:
        sock.close()


def _send(sock: socket.socket, line: str) -> None:
    try:
        sock.sendall(line.encode() + b"\n")
    except OSError:
        pass


def _read_line(sock: socket.socket) -> str:
    """One line (up to 200 bytes); '' when the other side closed."""
    data = b""
    while not data.endswith(b"\n") and len(data) < 200:
        try:
            chunk = sock.recv(200 - len(data))
        except ConnectionError:
            return ""
        if not chunk:
            return data.decode(errors="replace").strip() if data else ""
        data += chunk
    return data.decode(errors="replace").strip()


def _listed(indices: list[int]) -> str:
    return ", ".join(map(str, indices[:10])) + (f" and {len(indices) - 10} more" if len(indices) > 10 else "")
