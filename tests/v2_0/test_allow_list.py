"""The pickle allow-list is an allow-list: whatever it does not name is refused, known gadget or not.

The hostile-pickle tests elsewhere use the famous gadgets (``os.system``, ``eval``...), which a
deny-list would refuse too. Here the globals are harmless-looking or unknown ones, written with
pickle's opcodes by hand, in every form that reaches ``find_class``: GLOBAL (protocol 0),
STACK_GLOBAL (protocol 4) and INST. And nothing the payload names may be imported, let alone run:
a module written for the test, which leaves a mark when imported, must stay unimported.
"""

from __future__ import annotations

import datetime
import decimal
import pickle
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stages.v2_0 import PickleSerializer, SerializationError, TypeRegistry, api_spec
from stages.v2_0.serializers import SAFE_GLOBALS, AllowListUnpickler
from stages.v2_0.user_stub import User, UserApi

REGISTRY = TypeRegistry.of([api_spec(UserApi)])


def _unicode(text: str) -> bytes:
    data = text.encode()
    return pickle.SHORT_BINUNICODE + bytes([len(data)]) + data


def by_global(module: str, name: str) -> bytes:
    """``module.name()`` named with GLOBAL, then called with no arguments (REDUCE)."""
    return (pickle.GLOBAL + f"{module}\n{name}\n".encode() + pickle.EMPTY_TUPLE
            + pickle.REDUCE)


def by_stack_global(module: str, name: str) -> bytes:
    """``module.name()`` named with STACK_GLOBAL (the form protocol 4 and 5 write)."""
    return _unicode(module) + _unicode(name) + pickle.STACK_GLOBAL + pickle.EMPTY_TUPLE \
        + pickle.REDUCE


def by_inst(module: str, name: str) -> bytes:
    """``module.name()`` as INST: find_class, then a call, in one opcode."""
    return pickle.MARK + pickle.INST + f"{module}\n{name}\n".encode()


FORMS = {"GLOBAL": by_global, "STACK_GLOBAL": by_stack_global, "INST": by_inst}


def as_outcome(expression: bytes) -> bytes:
    """A response envelope ``(True, <expression>)``, protocol 4."""
    return pickle.PROTO + b"\x04" + pickle.NEWTRUE + expression + pickle.TUPLE2 + pickle.STOP


def as_invocation(expression: bytes) -> bytes:
    """A request envelope ``("ns/Api", "m", (<expression>,), {})``, protocol 4."""
    return (pickle.PROTO + b"\x04" + pickle.MARK + _unicode("ns/Api") + _unicode("m") + expression
            + pickle.TUPLE1 + pickle.EMPTY_DICT + pickle.TUPLE + pickle.STOP)


# Globals no deny-list of gadgets would name: plain library classes and functions, the copyreg
# helper that pickle itself uses, the envelope's own modules' other names, and a registered
# class named through another module that happens to export it.
NOT_ALLOWED = [
    ("collections", "OrderedDict"),
    ("types", "SimpleNamespace"),
    ("functools", "partial"),
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
    ("builtins", "getattr"),
    ("builtins", "set"),
    ("datetime", "tzinfo"),
    ("decimal", "getcontext"),
    ("posix", "complex"),  # an allowed name, in another module
    ("stages.v2_0.user_stub", "User"),  # the registered class, re-exported by its package
    ("stages.v2_0.user_stub.types", "UserNotFound"),  # registered module, unregistered name
    ("stages.v2_0.serializers", "PickleSerializer"),
]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("module, name", NOT_ALLOWED,
                         ids=[f"{m}.{n}" for m, n in NOT_ALLOWED])
def test_a_global_that_is_not_allowed_is_refused(form: str, module: str, name: str) -> None:
    expression = FORMS[form](module, name)
    # The unpickler itself, where the allow-list lives: refused by find_class, by name.
    with pytest.raises(pickle.UnpicklingError, match=f"global '{module}.{name}' is forbidden"):
        AllowListUnpickler(as_outcome(expression), REGISTRY).load()
    # The serializer, in both envelopes. (It may refuse such a payload even sooner; any refusal
    # will do, since the envelope around the global is a valid one.)
    serializer = PickleSerializer(REGISTRY)
    with pytest.raises(SerializationError):
        serializer.decode_outcome(as_outcome(expression))
    with pytest.raises(SerializationError):
        serializer.decode_invocation(as_invocation(expression))


@pytest.fixture
def canary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """An importable module that nobody has imported, which leaves a file when it is imported
    or its function is called: ``(module name, mark file)``."""
    name = f"rpc_canary_{uuid.uuid4().hex}"
    mark = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(
        f"from pathlib import Path\n"
        f"Path({str(mark)!r}).write_text('imported')\n"
        f"def touch():\n"
        f"    Path({str(mark)!r}).write_text('called')\n"
        f"class Thing:\n"
        f"    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert name not in sys.modules
    yield name, mark
    sys.modules.pop(name, None)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("attribute", ["touch", "Thing", "no_such_name"])
def test_a_global_of_an_unknown_module_is_refused_without_importing_it(
        canary: tuple[str, Path], form: str, attribute: str) -> None:
    module, mark = canary
    expression = FORMS[form](module, attribute)
    with pytest.raises(pickle.UnpicklingError, match=f"global '{module}.{attribute}' is forbidden"):
        AllowListUnpickler(as_outcome(expression)).load()
    for decode, envelope in ((PickleSerializer(REGISTRY).decode_outcome, as_outcome),
                             (PickleSerializer(REGISTRY).decode_invocation, as_invocation),
                             (PickleSerializer().decode_outcome, as_outcome)):
        with pytest.raises(SerializationError):
            decode(envelope(expression))
    assert module not in sys.modules
    assert not mark.exists()


def test_the_canary_would_tell(canary: tuple[str, Path]) -> None:
    # The check above is only worth something if importing the module really leaves its mark
    # and shows in sys.modules: prove it with plain pickle, which imports whatever it is told.
    module, mark = canary
    assert pickle.loads(as_outcome(by_global(module, "Thing")))[0] is True
    assert module in sys.modules and mark.read_text() == "imported"
    pickle.loads(as_outcome(by_stack_global(module, "touch")))
    assert mark.read_text() == "called"


# The allow-list is not "refuse everything" either: what it names loads, through every form.

ALLOWED_VALUES: dict[tuple[str, str], Callable[[], Any]] = {
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("datetime", "date"): lambda: datetime.date(2024, 2, 29),
    ("datetime", "time"): datetime.time,
    ("datetime", "datetime"): lambda: datetime.datetime(2024, 2, 29, 12, 30),
    ("datetime", "timedelta"): datetime.timedelta,
    ("datetime", "timezone"): lambda: datetime.UTC,
    ("decimal", "Decimal"): lambda: decimal.Decimal("1.10"),
}


def test_the_allowed_globals_are_safe_value_types_only() -> None:
    # A global added to the allow-list must be added here too, with a reason it is safe: this
    # is the list of value types that build nothing but themselves. (Taking one away is fine.)
    assert SAFE_GLOBALS <= set(ALLOWED_VALUES), SAFE_GLOBALS - set(ALLOWED_VALUES)


@pytest.mark.parametrize("module, name", sorted(SAFE_GLOBALS),
                         ids=[f"{m}.{n}" for m, n in sorted(SAFE_GLOBALS)])
def test_every_allowed_global_loads(module: str, name: str) -> None:
    value = ALLOWED_VALUES[(module, name)]()
    payload = pickle.dumps((True, value), 4)
    assert PickleSerializer().decode_outcome(payload).value == value
    # Named by hand too, in both forms: find_class hands back the very class.
    for named in (pickle.GLOBAL + f"{module}\n{name}\n".encode(),
                  _unicode(module) + _unicode(name) + pickle.STACK_GLOBAL):
        assert AllowListUnpickler(as_outcome(named)).load() == (True, type(value))


def test_a_registered_data_class_loads_only_where_it_is_registered() -> None:
    payload = pickle.dumps((True, [User(1, "Ada", "ada@example.org")]), 5)
    assert PickleSerializer(REGISTRY).decode_outcome(payload).value == [User(1, "Ada", "ada@example.org")]
    with pytest.raises(SerializationError, match="global 'stages.v2_0.user_stub.types.User' is forbidden"):
        PickleSerializer().decode_outcome(payload)
