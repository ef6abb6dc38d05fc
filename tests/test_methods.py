"""The method protocol: every method in the registry has its shape, and through it returns the same rows."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from is2cloud import methods
from is2cloud.methods import assert_same_rows, check_canonical
from is2cloud.methods.protocol import Prepared, check_method
GREENLAND = Path(__file__).resolve().parents[1] / "data" / "greenland_aoi.geojson"


def test_registry_lists_methods_in_book_order():
    names = [m.NAME for m in methods.available()]
    assert names == list(methods.METHODS) and names[0] == "baseline"
    chapters = [m.CHAPTER for m in methods.available()]
    assert chapters == sorted(chapters), "methods are not in the order of their chapters"
    with pytest.raises(ValueError, match="unknown method 'nope'; choose one of baseline"):
        methods.get("nope")


@pytest.mark.parametrize("name", methods.METHODS)
def test_method_follows_the_protocol(name):
    assert check_method(methods.get(name)) == []


def test_the_protocol_check_finds_what_is_missing():
    def prepare(granules, *, credentials=None):  # no out=, no other keywords
        return None

    def subset(granules, aoi, variables=("h_li",), *, credentials=None, out_credentials=None, client=None,
               progress=None):
        return None

    bad = types.ModuleType("bad")
    bad.NAME, bad.prepare, bad.subset = "bad", prepare, subset
    problems = check_method(bad)
    assert "no TITLE" in problems and "prepare takes no out=" in problems
    assert "prepare takes no keyword-only out_credentials=" in problems
    assert "subset's variables do not default to None" in problems


@pytest.fixture(scope="module")
def reference(granules, creds):
    return methods.get("baseline").subset(granules, GREENLAND, credentials=creds, client="sync")


@pytest.mark.parametrize("name", methods.METHODS)
def test_prepare_then_subset_gives_the_baseline_rows(name, granules, creds, reference, archive_cloud):
    method = methods.get(name)
    prepared = method.prepare(granules, credentials=creds, out_credentials=creds, client="sync")
    if prepared is not None:
        assert isinstance(prepared, Prepared) and prepared.method == name
        assert prepared.nbytes > 0 and prepared.location and prepared.location.startswith("s3://")
        from is2cloud.parallel import granule_name

        assert set(prepared.granules) == {granule_name(g) for g in granules}
    gdf = method.subset(prepared if prepared is not None else granules, GREENLAND, credentials=creds,
                        out_credentials=creds, client="sync")
    check_canonical(gdf)
    assert len(gdf) > 0
    assert_same_rows(reference, gdf, names=("baseline", name))
