"""Confining a process that touches an uploaded model: memory, CPU time, no network.

Called first thing in a fresh child process (`worker.teacher_process`, `worker.inspect_teacher`),
while it is still single-threaded (a new user namespace refuses threaded callers) and before it
imports numpy, torch or onnxruntime. Standard library only, so that stays true.

Network: a new, empty network namespace (no interface up, not even loopback), entered with
`unshare(CLONE_NEWNET)` as root or `unshare(CLONE_NEWUSER | CLONE_NEWNET)` otherwise. Where the
kernel refuses namespaces (containers without the capability, user namespaces switched off), a
seccomp filter makes `socket()` fail for every family but AF_UNIX and refuses io_uring (which
can open sockets without the socket syscall); inherited descriptors are closed by the parent.
Where neither works the process refuses to go on: nothing runs a model with the network open.

Memory: an address-space limit (RLIMIT_AS), except for a teacher on a GPU: CUDA reserves
address space far beyond any such limit (tens of GiB, never touched) before it allocates
anything, so there the same number bounds the data segment instead (RLIMIT_DATA: every private
writable mapping, which is all the host memory the process can fill), and the teacher's
runtime bounds its GPU memory with it (onnxruntime's gpu_mem_limit, torch's memory fraction:
worker/engine/teacher_runtime.py)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import resource
import signal
import struct
from dataclasses import dataclass
from typing import Literal

NetworkMode = Literal["auto", "namespace", "seccomp"]
MemoryLimit = Literal["address_space", "data"]

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522
CAP_LAST = 63
# Output to files (logs included) a confined process may write; above it, SIGXFSZ.
FILE_SIZE_BYTES = 64 * 1024 * 1024
# CPU seconds between the soft limit (SIGXCPU) and the hard one (SIGKILL).
CPU_GRACE_SECONDS = 5

# (audit arch, socket, io_uring_setup) per machine; the filter kills any other ABI outright.
_SECCOMP_ABI = {
    "x86_64": (0xC000003E, 41, 425),
    "aarch64": (0xC00000B7, 198, 425),
}


class ConfinementFailed(Exception):
    """The process could not be confined; it must not go on to load a model."""


@dataclass(frozen=True)
class Confinement:
    network: str  # "namespace" or "seccomp"
    memory_bytes: int
    cpu_seconds: int


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _call(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL when the parent goes; exit now if it already went (the fork-to-prctl race)."""
    _call(_libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    if parent_pid and os.getppid() != parent_pid:
        os._exit(1)


def _set(limit: int, soft: int, hard: int) -> None:
    _, old_hard = resource.getrlimit(limit)
    if old_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, old_hard), min(hard, old_hard)
    resource.setrlimit(limit, (soft, hard))


def memory_limit(device: str) -> MemoryLimit:
    """The limit that bounds a confined process's memory on this device (see above)."""
    return "data" if device == "cuda" else "address_space"


def limit_resources(
    memory_bytes: int, cpu_seconds: int, memory: MemoryLimit = "address_space"
) -> None:
    # Address space (or data), not resident memory: an allocation over the limit fails at
    # once (a MemoryError or the runtime's "failed to allocate") instead of paging the machine.
    limit = resource.RLIMIT_AS if memory == "address_space" else resource.RLIMIT_DATA
    _set(limit, memory_bytes, memory_bytes)
    _set(resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + CPU_GRACE_SECONDS)
    _set(resource.RLIMIT_FSIZE, FILE_SIZE_BYTES, FILE_SIZE_BYTES)
    _set(resource.RLIMIT_CORE, 0, 0)


def _write(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


def enter_network_namespace() -> None:
    libc = _libc()
    if os.geteuid() == 0:
        _call(libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        return
    uid, gid = os.geteuid(), os.getegid()
    _call(libc.unshare(CLONE_NEWUSER | CLONE_NEWNET), "unshare(CLONE_NEWUSER|CLONE_NEWNET)")
    # Keep our own ids inside the namespace (files we own stay ours); best effort.
    with contextlib.suppress(OSError):
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _seccomp_program(
    arch: int, socket_nr: int, io_uring_nr: int
) -> list[tuple[int, int, int, int]]:
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06  # BPF_LD|W|ABS, JMP|JEQ|K, JMP|JGE|K, RET|K
    allow, kill = 0x7FFF0000, 0x80000000
    refuse = 0x00050000 | 1  # SECCOMP_RET_ERRNO | EPERM
    af_unix = 1
    return [
        (ld, 0, 0, 4),  # 0: seccomp_data.arch
        (jeq, 1, 0, arch),  # 1: our ABI -> 3
        (ret, 0, 0, kill),  # 2: any other ABI (i386 socketcall, ...)
        (ld, 0, 0, 0),  # 3: seccomp_data.nr
        (jge, 5, 0, 0x40000000),  # 4: x32 numbers -> refuse
        (jeq, 4, 0, io_uring_nr),  # 5: io_uring_setup -> refuse
        (jeq, 1, 0, socket_nr),  # 6: socket -> 8
        (ret, 0, 0, allow),  # 7
        (ld, 0, 0, 16),  # 8: args[0] (domain), low 32 bits
        (jeq, 1, 0, af_unix),  # 9: AF_UNIX -> 11
        (ret, 0, 0, refuse),  # 10
        (ret, 0, 0, allow),  # 11
    ]


def block_sockets_with_seccomp() -> None:
    abi = _SECCOMP_ABI.get(platform.machine())
    if abi is None:
        raise ConfinementFailed(f"no seccomp network filter for {platform.machine()}")
    program = _seccomp_program(*abi)
    filters = (_SockFilter * len(program))(*(_SockFilter(*step) for step in program))
    fprog = _SockFprog(len(program), filters)
    libc = _libc()
    _call(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    _call(
        libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0),
        "prctl(PR_SET_SECCOMP)",
    )


def drop_capabilities() -> None:
    """Root without capabilities cannot raise its own hard limits back (CAP_SYS_RESOURCE)."""
    libc = _libc()
    for cap in range(CAP_LAST + 1):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the kernel's last cap
    _call(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    header = ctypes.create_string_buffer(struct.pack("Ii", LINUX_CAPABILITY_VERSION_3, 0))
    data = ctypes.create_string_buffer(bytes(24))  # effective, permitted, inheritable x 2
    _call(libc.capset(header, data), "capset")


def confine(
    memory_bytes: int,
    cpu_seconds: int,
    network: NetworkMode = "auto",
    parent_pid: int = 0,
    memory: MemoryLimit = "address_space",
) -> Confinement:
    """Limits, no network, no capabilities; raises ConfinementFailed if the network stays open."""
    die_with_parent(parent_pid)
    limit_resources(memory_bytes, cpu_seconds, memory)
    mode = ""
    if network in ("auto", "namespace"):
        try:
            enter_network_namespace()
            mode = "namespace"
        except OSError as exc:
            if network == "namespace":
                raise ConfinementFailed(str(exc)) from exc
    if not mode:
        try:
            block_sockets_with_seccomp()
        except OSError as exc:
            raise ConfinementFailed(f"cannot block the network: {exc}") from exc
        mode = "seccomp"
    drop_capabilities()
    return Confinement(network=mode, memory_bytes=memory_bytes, cpu_seconds=cpu_seconds)


def minimal_environment(
    threads: str | None, python_path: str | None, gpus: str | None = ""
) -> dict[str, str]:
    """What a confined child gets instead of the parent's environment (no database URLs).

    `gpus` is its CUDA_VISIBLE_DEVICES: "" (none, the default: a CPU teacher's address-space
    limit leaves CUDA no room), a list of devices, or None for every device the parent sees."""
    env = {
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        # glibc gives each thread its own 64 MiB heap arena: address space the limit counts.
        "MALLOC_ARENA_MAX": "2",
    }
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    if threads:
        env["OMP_NUM_THREADS"] = threads
    if python_path:
        env["PYTHONPATH"] = python_path
    return env
