"""A tiny static x86-64 Linux program that forces the kernel's random pool to reseed.

A clone restored from a saved memory state starts with the template's kernel CRNG state: two
clones would read the same /dev/urandom bytes. Writing new bytes to /dev/urandom mixes them into
the input pool but the CRNG only reseeds from it every 60 s, and Debian's cloud kernel has no
vmgenid driver (which would do it on restore). The RNDRESEEDCRNG ioctl on /dev/urandom reseeds
at once, but a shell cannot issue an ioctl and the tiny guest has no Python: this module writes
the ~150-byte program that does, to be sent along with the clone's identity script.

The program takes no arguments; its exit status is 0 when the reseed happened, else the errno
(EPERM when not root, ENOENT without /dev/urandom).
"""

from __future__ import annotations

import struct

RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07), linux/random.h
LOAD_ADDRESS = 0x400000
ELF_HEADER_SIZE = 64
PROGRAM_HEADER_SIZE = 56
DEVICE = b"/dev/urandom\0"

SYS_OPEN, SYS_IOCTL, SYS_EXIT = 2, 16, 60
O_WRONLY = 1


def _code() -> bytes:
    """The machine code: fd = open(DEVICE, O_WRONLY); r = ioctl(fd, RNDRESEEDCRNG); exit(-r).

    An open that fails jumps straight to the exit with its (negative) errno.
    """
    ioctl = (
        b"\x48\x89\xc7"  # mov rdi, rax         (the fd)
        + b"\xbe" + struct.pack("<I", RNDRESEEDCRNG)  # mov esi, RNDRESEEDCRNG
        + b"\x31\xd2"  # xor edx, edx
        + b"\xb8" + struct.pack("<I", SYS_IOCTL)  # mov eax, SYS_ioctl
        + b"\x0f\x05"  # syscall
    )  # fmt: skip
    leave = (
        b"\xf7\xd8"  # neg eax              (0, or the errno)
        + b"\x89\xc7"  # mov edi, eax
        + b"\xb8" + struct.pack("<I", SYS_EXIT)  # mov eax, SYS_exit
        + b"\x0f\x05"  # syscall
    )  # fmt: skip
    after_lea = (
        b"\xbe" + struct.pack("<I", O_WRONLY)  # mov esi, O_WRONLY
        + b"\x31\xd2"  # xor edx, edx         (mode)
        + b"\xb8" + struct.pack("<I", SYS_OPEN)  # mov eax, SYS_open
        + b"\x0f\x05"  # syscall
        + b"\x48\x85\xc0"  # test rax, rax
        + b"\x78" + struct.pack("<b", len(ioctl))  # js leave
        + ioctl
        + leave
    )  # fmt: skip
    # lea rdi, [rip + disp32]: the device name follows the code; rip points after the lea.
    return b"\x48\x8d\x3d" + struct.pack("<i", len(after_lea)) + after_lea + DEVICE


def reseed_program() -> bytes:
    """The complete ELF64 executable: one header, one read+execute PT_LOAD of the whole file."""
    code = _code()
    entry = LOAD_ADDRESS + ELF_HEADER_SIZE + PROGRAM_HEADER_SIZE
    size = ELF_HEADER_SIZE + PROGRAM_HEADER_SIZE + len(code)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little-endian, SysV
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH",
        2,  # ET_EXEC
        0x3E,  # EM_X86_64
        1,  # EV_CURRENT
        entry,
        ELF_HEADER_SIZE,  # program headers right after this header
        0,  # no section headers
        0,  # flags
        ELF_HEADER_SIZE,
        PROGRAM_HEADER_SIZE,
        1,  # one program header
        0,  # section header entry size
        0,  # no section headers
        0,  # no section name table
    )
    load = struct.pack(
        "<IIQQQQQQ",
        1,  # PT_LOAD
        5,  # PF_R | PF_X
        0,  # from the file's start
        LOAD_ADDRESS,
        LOAD_ADDRESS,
        size,
        size,
        0x1000,
    )
    return header + load + code
