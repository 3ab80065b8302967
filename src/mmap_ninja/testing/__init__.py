"""A test kit that runs mmap_ninja's conformance tests against any kind of map.

It needs the test tools of the ``dev`` extra (pytest and Hypothesis, imported here); ``import mmap_ninja`` never
imports this package. Usage, in a test module::

    import pytest
    from mmap_ninja.testing import THOROUGH, MapConformance, spec_for

    class TestStrings(MapConformance):
        spec = spec_for("strings")

    @pytest.mark.slow
    class TestStringsThorough(TestStrings):
        effort = THOROUGH

A new kind (a `MapBase` subclass with its own ``layout``) is tested by registering a `KindSpec` for it with
`register_spec`: how to make sample number ``i``, how to compare samples, which values it must refuse. `specs()`
raises `MissingSpecError` while a kind registered in `mmap_ninja.kinds.maps.KINDS` has no spec.

What `MapConformance` checks, through the public API only:

- round trips: ``from_generator``, ``from_indexable``, ``extend`` / ``append`` / ``transaction`` from a path
  with no map; indexing by int, negative int, NumPy int, slice, list, int array and boolean mask; iteration;
- handles: pickling keeps path, mode and data; reopening by path and with ``open_existing``; ``mode="r"``
  never writes; other kinds' classes refuse the map; ``refresh()`` sees other handles' commits and nothing of
  an open transaction; a transaction that raises commits nothing; in-place assignment reaches readers;
- bad input: every `BadSample` is refused with its exception by ``append``, ``extend``, a transaction and
  in-place assignment, leaving every file's bytes unchanged; a first write that is refused creates nothing;
  a build stopped by a bad sample is unfinished, readable with ``allow_unfinished=True``, and re-run;
- crashes: a child process extending in a loop is SIGKILLed at a random moment and the map holds exactly the
  writes that returned (plus possibly the one under way, whole); a killed ``from_generator`` leaves an
  unfinished build that ``allow_unfinished=True`` reads and that re-running replaces;
- concurrency: two processes appending batches at once (racing to create the map, or to an existing one):
  every batch whole, each writer's in order; a writer thread and reader threads on one object never see a
  torn sample;
- a Hypothesis state machine (`make_state_machine`) comparing the map with a list.

`ContainerConformance` runs the read side (every indexing form, ``get_batch``, iteration, pickling, ``wrapper_fn``,
``verify_reads`` against damaged bytes) on the containers that are not a kind's own map: sharded maps, maps at a
URL (``memory://`` or a real store) and records' field containers; `container_cases` lists them.
"""

from __future__ import annotations

from mmap_ninja.testing.conformance import (
    QUICK,
    THOROUGH,
    Effort,
    MapConformance,
    assert_holds,
    directory_digest,
    quick_gil_handoff,
)
from mmap_ninja.testing.containers import ContainerCase, ContainerConformance, Place, container_cases
from mmap_ninja.testing.processes import check_interleaved_batches
from mmap_ninja.testing.registry import (
    BUILTIN_SPECS,
    BadSample,
    KindSpec,
    MissingSpecError,
    arrays_equal,
    register_spec,
    spec_for,
    specs,
)
from mmap_ninja.testing.stateful import MapStateMachine, make_state_machine

__all__ = [
    "BUILTIN_SPECS",
    "QUICK",
    "THOROUGH",
    "BadSample",
    "ContainerCase",
    "ContainerConformance",
    "Effort",
    "KindSpec",
    "MapConformance",
    "MapStateMachine",
    "MissingSpecError",
    "Place",
    "arrays_equal",
    "assert_holds",
    "check_interleaved_batches",
    "container_cases",
    "directory_digest",
    "make_state_machine",
    "quick_gil_handoff",
    "register_spec",
    "spec_for",
    "specs",
]
