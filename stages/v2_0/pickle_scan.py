"""Reading a pickle's opcodes before loading it, to refuse what would cost too much.

A pickle is a small program for a stack machine: each *opcode* is one byte, followed by its
argument (a number, or a length and that many bytes), and the unpickler runs them one by one:
``EMPTY_LIST`` pushes a new list, ``BININT1 7`` pushes 7, ``APPEND`` appends the top of the stack to
the list below it, ``MEMOIZE`` remembers the top of the stack in slot *n* of the *memo* so that
``BINGET n`` can push it again later (that is how pickle keeps shared references shared)::

    >>> pickletools.dis(pickle.dumps([7, 7], 5))
        0: \\x80 PROTO      5
        2: \\x95 FRAME      9
       11: ]    EMPTY_LIST
       12: \\x94 MEMOIZE    (as 0)
       13: (    MARK
       14: K        BININT1    7
       16: K        BININT1    7
       18: e        APPENDS    (MARK at 13)
       19: .    STOP

The allow-list (``find_class``) decides which *classes* a pickle may name. It does not decide
how much memory the program may ask for, and CPython's unpickler obeys some requests at once:

* ``LONG_BINPUT 50000000`` (5 bytes) makes it grow its memo table to 100,000,000 slots: 800 MB;
* ``EMPTY_SET`` is one byte that builds a 216-byte object (232 with the reference to it): a
  megabyte of them is over 200 MB;
* a general-purpose constructor the allow-list lets through does what its arguments say
  (``bytearray(10**9)`` is a gigabyte; this is why only data classes and plain values are
  allowed, see :data:`~stages.v2_0.serializers.SAFE_GLOBALS`).

So :func:`scan_pickle` reads the opcodes first, without running any, and refuses the payload
unless:

* it is made only of the binary opcodes that build plain values, look up allowed classes
  (``STACK_GLOBAL``, protocol 4 and 5, which :class:`PickleSerializer` writes) and call them; the
  opcodes of the old text protocol (``GLOBAL`` and ``INST`` among them), persistent ids, the
  extension registry and out-of-band buffers are refused;
* every memo slot it writes is the next free one or an existing one, and every slot it reads
  exists;
* every length it announces fits in the bytes that follow, and integers stay within
  ``max_int_bits``;
* what it would build, estimated from each opcode's worst case (the table below), stays within
  ``memory_budget``;
* it ends with ``STOP``, and nothing follows.

Reading is a loop over the bytes in Python, so it costs a few hundred nanoseconds per opcode: a
call's envelope is 20 to 40 opcodes.
"""

from __future__ import annotations

import pickle
from typing import Final

from stages.v2_0.errors import SerializationError
from stages.v2_0.limits import DecodeLimits

__all__ = ["scan_pickle"]

# How each opcode's argument is laid out: nothing, a fixed number of bytes, or a length of
# (1, 4 or 8) bytes followed by that many bytes.
_NONE, _FIXED, _COUNTED = 0, 1, 2

#: Bytes a pushed reference costs (a slot on the stack, then in a container).
_REF: Final = 8
_SMALL_OBJECT: Final = 64  # an empty list or dict, a tuple of 1 to 3, an int, a float
_SET: Final = 232  # an empty set or frozenset
_INSTANCE: Final = 200  # an object and its __dict__


def _op(code: bytes) -> int:
    return code[0]


#: opcode -> (argument layout, argument size, worst-case bytes built). Opcodes not listed are
#: refused. The sizes are CPython 3.11's, rounded up.
_RULES: Final[dict[int, tuple[int, int, int]]] = {
    _op(pickle.PROTO): (_FIXED, 1, 0),
    _op(pickle.FRAME): (_FIXED, 8, 0),
    _op(pickle.STOP): (_NONE, 0, 0),
    _op(pickle.MARK): (_NONE, 0, _REF),
    _op(pickle.POP): (_NONE, 0, 0),
    _op(pickle.POP_MARK): (_NONE, 0, 0),
    _op(pickle.DUP): (_NONE, 0, _REF),
    # constants and numbers
    _op(pickle.NONE): (_NONE, 0, _REF),
    _op(pickle.NEWTRUE): (_NONE, 0, _REF),
    _op(pickle.NEWFALSE): (_NONE, 0, _REF),
    _op(pickle.BININT): (_FIXED, 4, _REF + _SMALL_OBJECT),
    _op(pickle.BININT1): (_FIXED, 1, _REF),  # 0..255: Python keeps these ints ready-made
    _op(pickle.BININT2): (_FIXED, 2, _REF + _SMALL_OBJECT),
    _op(pickle.LONG1): (_COUNTED, 1, _REF + _SMALL_OBJECT),
    _op(pickle.LONG4): (_COUNTED, 4, _REF + _SMALL_OBJECT),
    _op(pickle.BINFLOAT): (_FIXED, 8, _REF + _SMALL_OBJECT),
    # strings and bytes: their length is added
    _op(pickle.SHORT_BINUNICODE): (_COUNTED, 1, _REF + _SMALL_OBJECT),
    _op(pickle.BINUNICODE): (_COUNTED, 4, _REF + _SMALL_OBJECT),
    _op(pickle.BINUNICODE8): (_COUNTED, 8, _REF + _SMALL_OBJECT),
    _op(pickle.SHORT_BINBYTES): (_COUNTED, 1, _REF + _SMALL_OBJECT),
    _op(pickle.BINBYTES): (_COUNTED, 4, _REF + _SMALL_OBJECT),
    _op(pickle.BINBYTES8): (_COUNTED, 8, _REF + _SMALL_OBJECT),
    _op(pickle.BYTEARRAY8): (_COUNTED, 8, _REF + _SMALL_OBJECT),
    # containers
    _op(pickle.EMPTY_TUPLE): (_NONE, 0, _REF),
    _op(pickle.TUPLE1): (_NONE, 0, _SMALL_OBJECT),
    _op(pickle.TUPLE2): (_NONE, 0, _SMALL_OBJECT),
    _op(pickle.TUPLE3): (_NONE, 0, _SMALL_OBJECT),
    _op(pickle.TUPLE): (_NONE, 0, _SMALL_OBJECT),
    _op(pickle.EMPTY_LIST): (_NONE, 0, _REF + _SMALL_OBJECT),
    _op(pickle.LIST): (_NONE, 0, _SMALL_OBJECT),
    _op(pickle.APPEND): (_NONE, 0, _REF),
    _op(pickle.APPENDS): (_NONE, 0, 0),
    _op(pickle.EMPTY_DICT): (_NONE, 0, _REF + _SMALL_OBJECT),
    _op(pickle.DICT): (_NONE, 0, _SMALL_OBJECT),
    _op(pickle.SETITEM): (_NONE, 0, 2 * _REF),
    _op(pickle.SETITEMS): (_NONE, 0, 0),
    _op(pickle.EMPTY_SET): (_NONE, 0, _REF + _SET),
    _op(pickle.FROZENSET): (_NONE, 0, _SET),
    _op(pickle.ADDITEMS): (_NONE, 0, 0),
    # the memo
    _op(pickle.MEMOIZE): (_NONE, 0, 2 * _REF),
    _op(pickle.BINPUT): (_FIXED, 1, 2 * _REF),
    _op(pickle.LONG_BINPUT): (_FIXED, 4, 2 * _REF),
    _op(pickle.BINGET): (_FIXED, 1, _REF),
    _op(pickle.LONG_BINGET): (_FIXED, 4, _REF),
    # classes (through find_class, so only allowed ones) and instances
    _op(pickle.STACK_GLOBAL): (_NONE, 0, _REF),
    _op(pickle.REDUCE): (_NONE, 0, _INSTANCE),
    _op(pickle.NEWOBJ): (_NONE, 0, _INSTANCE),
    _op(pickle.NEWOBJ_EX): (_NONE, 0, _INSTANCE),
    _op(pickle.BUILD): (_NONE, 0, _INSTANCE),
}

# What the scan does for each opcode, worked out once from the table above: most opcodes need
# nothing but their cost added (_PLAIN), or their fixed argument skipped (_SKIP).
_PLAIN, _SKIP, _COUNTED_ARG, _INT, _MEMOIZE, _PUT, _GET, _PROTO, _STOP = range(9)
_SPECIAL: Final = {
    _op(pickle.MEMOIZE): _MEMOIZE, _op(pickle.BINPUT): _PUT, _op(pickle.LONG_BINPUT): _PUT,
    _op(pickle.BINGET): _GET, _op(pickle.LONG_BINGET): _GET, _op(pickle.PROTO): _PROTO,
    _op(pickle.STOP): _STOP, _op(pickle.LONG1): _INT, _op(pickle.LONG4): _INT,
}
_SIGNED: Final = frozenset({_op(pickle.LONG4)})
_TABLE: Final[list[tuple[int, int, int] | None]] = [None] * 256
for _code, (_layout, _size, _weight) in _RULES.items():
    _kind = _SPECIAL.get(_code, {_NONE: _PLAIN, _FIXED: _SKIP, _COUNTED: _COUNTED_ARG}[_layout])
    _TABLE[_code] = (_kind, _size, _weight)


def scan_pickle(data: bytes, limits: DecodeLimits) -> None:
    """Check a pickle's opcodes against the rules above, without running any.

    Scanning allocates nothing, so the estimated cost is compared with the budget once, at the
    end.

    Raises:
        SerializationError: the payload breaks a rule; the message says which, at which offset.
    """
    table = _TABLE
    end = len(data)
    pos = 0
    memo = 0  # memo slots written so far
    cost = 0
    while pos < end:
        op = data[pos]
        rule = table[op]
        if rule is None:
            raise _refuse(pos, f"opcode {_name(op)} is not allowed")
        kind, size, weight = rule
        pos += 1
        cost += weight
        if kind == _PLAIN:
            continue
        if kind == _MEMOIZE:
            memo += 1
        elif kind == _STOP:
            if pos != end:
                raise _refuse(pos - 1, f"{end - pos} bytes after STOP")
            if cost > limits.memory_budget:
                raise SerializationError(
                    f"pickle: the payload would build more than {limits.memory_budget >> 20} MiB "
                    f"of objects (about {cost >> 20} MiB)")
            return
        elif kind in (_COUNTED_ARG, _INT):
            length = int.from_bytes(data[pos:pos + size], "little", signed=op in _SIGNED)
            pos += size
            if length < 0 or pos + length > end:
                raise _refuse(pos - size - 1, "truncated (a length beyond the payload)")
            if kind == _INT and length > limits.max_int_bits // 8 + 1:
                raise _refuse(pos - size - 1, f"an integer of {length} bytes is larger than the "
                              f"limit of {limits.max_int_bits} bits")
            pos += length
            cost += length
        else:  # a fixed-size argument
            if pos + size > end:
                raise _refuse(pos - 1, "truncated")
            if kind != _SKIP:
                arg = int.from_bytes(data[pos:pos + size], "little")
                if kind == _GET and arg >= memo:
                    raise _refuse(pos - 1, f"memo slot {arg} read before it was written")
                if kind == _PUT:
                    if arg > memo:
                        raise _refuse(pos - 1, f"memo slot {arg} written out of order (next "
                                      f"is {memo})")
                    memo += arg == memo
                if kind == _PROTO and not 2 <= arg <= pickle.HIGHEST_PROTOCOL:
                    raise _refuse(pos - 1, f"protocol {arg} (2 to {pickle.HIGHEST_PROTOCOL} "
                                  "accepted)")
            pos += size
    raise SerializationError("pickle: truncated (no STOP)")


def _refuse(offset: int, what: str) -> SerializationError:
    return SerializationError(f"pickle: {what} (at byte {offset})")


def _name(op: int) -> str:
    names = {code[0]: name for name, code in vars(pickle).items()
             if name.isupper() and isinstance(code, bytes) and len(code) == 1}
    return f"{names.get(op, 'unknown')} (0x{op:02x})"
