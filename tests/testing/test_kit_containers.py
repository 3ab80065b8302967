"""The kit's read-side conformance (mmap_ninja.testing.ContainerConformance) on every container that is not a kind's
own map: sharded maps, maps at a URL (memory:// and the loopback S3 server), and records' field containers (of a
records map and of a sharded records map). The default run is small; the ``slow`` classes add spawned workers."""

from __future__ import annotations

import re

import pytest

from mmap_ninja.adapters._block_map import RemoteBlockMap
from mmap_ninja.testing import ContainerConformance, Place, container_cases

CASES = container_cases()


def _class_name(case_name: str) -> str:
    return "Test" + "".join(part.capitalize() for part in re.split(r"[^a-zA-Z0-9]+", case_name) if part)


def _case_class(name, case, base=ContainerConformance, **attributes):
    namespace = {"case": case, **attributes}
    return type(_class_name(name), (base,), namespace)


for _name, _case in CASES.items():
    globals()[_class_name(_name)] = _case_class(_name, _case)


class _OnS3(ContainerConformance):
    @pytest.fixture
    def place(self, tmp_path, s3_server):
        return Place(tmp_path, f"s3://{s3_server.bucket()}/kit", s3_server.options())


TestS3RemoteRecords = _case_class("s3-remote-records", CASES["remote-records"], _OnS3)
TestS3RemoteShardedStrings = _case_class("s3-remote-sharded-strings", CASES["remote-sharded-strings"], _OnS3)


TestShardedRecordsImagesInSpawnedWorkers = pytest.mark.slow(_case_class(
    "sharded-records-images-in-spawned-workers", CASES["sharded-records-images"], spawn_workers=True, samples=40))
TestRemoteShardedRaggedInSpawnedWorkers = pytest.mark.slow(_case_class(
    "remote-sharded-ragged-in-spawned-workers", CASES["remote-sharded-ragged"], spawn_workers=True, samples=40))


def test_every_builtin_kind_has_its_container_cases():
    kinds = {case.spec.name if hasattr(case.spec, "name") else case.spec.kind for case in CASES.values()}
    assert {"strings", "ragged", "numpy", "records", "images"} <= {str(k) for k in kinds}
    assert {case.layout for case in CASES.values()} == {"sharded", "remote", "remote-sharded", "local"}


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if case.fetch == "blocks"])
def test_the_block_cases_are_read_by_blocks(tmp_path, name):
    pytest.importorskip("fsspec")
    case = CASES[name]
    place = Place(tmp_path, f"memory://mmap-ninja-kit-blocks/{name}")
    case.build(place, 12)
    m = case.open(place)
    assert m.fetch_block_size == case.block_size
    maps = [m.shard(k) for k in range(len(m.shards))] if case.sharded else [m]
    assert all(isinstance(one, RemoteBlockMap) for one in maps if len(one))
    assert case.sharded or len(m.shards) > 1, "the tiny map should span several blocks"
