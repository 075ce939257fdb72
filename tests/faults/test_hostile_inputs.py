"""Hostile inputs that crashed or exhausted memory: each now one line and a non-zero exit.

The attacks are performed for real: a 1 MB Sentinel-2 SAFE zip whose metadata inflates to
1 GiB, an XML entity bomb in that metadata, a 332-byte YAML alias bomb passed to
`--config`, STAC Items whose fields have the wrong types, a 200,000-deep JSON, oversized
Item and MTL files. They run through `pipeline run` (click's CliRunner) inside ONE
subprocess whose address space is limited to what its imports took plus 1 GiB
(RLIMIT_AS), so a regression that inflates the bomb fails this test with a MemoryError
instead of exhausting the machine, and within a subprocess timeout instead of hanging.
Before the fixes: 2.4 GB RSS then a MemoryError traceback (the zip), 2.5 GB (the YAML
error message repr'd the expanded value), AttributeError / KeyError / TypeError /
RecursionError tracebacks (the Items).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO, SN6

S2_NAME = "S2A_MSIL2A_20200101T100000_N0214_R122_T32TQM_20200101T120000"
#: one known key (so the old code got as far as validating the value, and repr'd it for
#: the error: 9**9 "lol"s), its value nine levels of aliases to the level below
BILLION_LAUGHS_YAML = "bands: [" + ", ".join(
    ['&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"&{c} [{','.join([f'*{p}'] * 9)}]"
       for p, c in zip("abcdefgh", "bcdefghi", strict=True)]) + "]\n"
BILLION_LAUGHS_XML = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + "".join(f' <!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">\n'
              for i in range(1, 10))
    + "]>\n<lolz>&lol9;</lolz>\n")

#: what the driver may use beyond its imports (bytes of address space)
HEADROOM = 2**30

_DRIVER = """
import json, resource, sys
import torch  # noqa: F401 (imported before the limit: what every run needs anyway)
from click.testing import CliRunner
import pipeline.cli, pipeline.inputs.sources, pipeline.config

pages = int(open("/proc/self/statm").read().split()[0])
limit = pages * resource.getpagesize() + {headroom}
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
results = {{}}
for name, args in json.loads(sys.argv[1]).items():
    r = CliRunner().invoke(pipeline.cli.main, ["run", *args])
    exc = None if r.exception is None or isinstance(r.exception, SystemExit) else repr(
        r.exception)[:500]
    results[name] = [r.exit_code, r.stderr, exc]
print(json.dumps(results))
"""


def _bomb_zip(path: Path, member: str, size: int) -> Path:
    """A zip whose `member` inflates to `size` bytes of zeros (deflate: ~1000:1)."""
    chunk = bytes(2**20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf, \
            zf.open(member, "w", force_zip64=True) as f:
        for _ in range(size // len(chunk)):
            f.write(chunk)
    return path


def _item(assets: object, **extra: object) -> str:
    return json.dumps({"type": "Feature", "stac_version": "1.0.0", "id": "x",
                       "geometry": None, "properties": {"datetime": "2020-01-01T00:00:00Z"},
                       "links": [], "assets": assets, **extra})


def _rgb(asset: object) -> dict[str, object]:
    return {c: asset for c in ("red", "green", "blue")}


def _eo(common: str, **extra: object) -> dict[str, object]:
    return {"eo:bands": [{"name": common, "common_name": common}], **extra}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[str], int, str]]:
    """{case: (pipeline run arguments, expected exit status, expected words)}."""
    d = tmp_path_factory.mktemp("hostile")
    bomb = _bomb_zip(d / f"{S2_NAME}.zip", f"{S2_NAME}.SAFE/MTD_MSIL2A.xml", 2**30)
    assert bomb.stat().st_size < 2 * 2**20  # a ~1 MB download
    with zipfile.ZipFile(d / f"S2B_MSIL2A_{S2_NAME[11:]}.zip", "w") as zf:
        zf.writestr(f"{S2_NAME}.SAFE/MTD_MSIL2A.xml", BILLION_LAUGHS_XML)
    laughs = d / f"S2B_MSIL2A_{S2_NAME[11:]}.zip"
    (d / "bomb.yaml").write_text(BILLION_LAUGHS_YAML)
    assert len(BILLION_LAUGHS_YAML) < 400
    (d / "deep.yaml").write_text("a: " + "[" * 100_000)
    files = {
        "asset_is_a_string.json": _item(_rgb("red.tif")),
        "asset_without_href.json": _item({c: _eo(c) for c in ("red", "green", "blue")}),
        "integer_href.json": _item({c: _eo(c, href=42) for c in ("red", "green", "blue")}),
        "eo_bands_of_strings.json": _item(_rgb({"href": "x.tif", "eo:bands": ["red"]})),
        "bands_not_a_list.json": _item(_rgb({"href": "x.tif", "bands": "red"})),
        "properties_a_list.json": _item({"visual": {"href": "x.tif"}}).replace(
            '"properties": {"datetime": "2020-01-01T00:00:00Z"}', '"properties": [1]'),
        "datetime_a_number.json": _item({"visual": {"href": str(SN6)}}).replace(
            '"2020-01-01T00:00:00Z"', "1577836800"),
        "deep.json": "[" * 200_000 + "]" * 200_000,
        "huge.json": _item({"visual": {"href": "x.tif"}}, pad="x" * (9 * 2**20)),
    }
    for name, text in files.items():
        (d / name).write_text(text)
    (d / "LC08_L2SP_001002_20200101_20200102_02_T1_MTL.txt").write_bytes(
        b"GROUP = PRODUCT_CONTENTS\n" + b" " * (17 * 2**20))
    out = d / "out"
    out.mkdir()
    model = "no-model-needed.pt"  # every case is refused before the model is opened
    cases = {
        "s2_zip_bomb": ([str(bomb)], 1, "MTD_MSIL2A.xml is larger than 16 MiB"),
        "s2_xml_entity_bomb": ([str(laughs)], 1, "not readable product metadata"),
        "yaml_alias_bomb": ([str(SN6), "--config", str(d / "bomb.yaml")], 2,
                            "YAML aliases are not accepted"),
        "yaml_too_deep": ([str(SN6), "--config", str(d / "deep.yaml")], 2,
                          "nested too deeply"),
        "asset_is_a_string.json": 1, "asset_without_href.json": 1, "integer_href.json": 1,
        "eo_bands_of_strings.json": 1, "bands_not_a_list.json": 1,
        "properties_a_list.json": 1, "datetime_a_number.json": 1,
        "deep.json": 1, "huge.json": 1,
        "landsat_mtl_17_mib": ([str(d / "LC08_L2SP_001002_20200101_20200102_02_T1_MTL.txt")],
                               1, "larger than 16 MiB, not a Landsat MTL"),
    }
    words = {"deep.json": "nested too deeply", "huge.json": "larger than 8 MiB",
             "asset_without_href.json": "has no href string",
             "integer_href.json": "has no href string (href: 42)"}
    table = {}
    for name, case in cases.items():
        if isinstance(case, int):
            case = ([str(d / name)], case, words.get(name, "malformed STAC Item"))
        args, status, expected = case
        table[name] = ([args[0], str(out / f"{name}.tif"), "--model", model, *args[1:]],
                       status, expected)
    return table


def test_hostile_inputs_end_in_one_line_within_bounded_memory(hostile, tmp_path):
    cases = {name: args for name, (args, _, _) in hostile.items()}
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "MALLOC_ARENA_MAX": "2"}
    proc = subprocess.run([sys.executable, "-c", _DRIVER.format(headroom=HEADROOM),
                           json.dumps(cases)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (args, status, expected) in hostile.items():
        code, stderr, exc = results[name]
        assert exc is None, (name, exc)
        assert code == status, (name, code, stderr)
        assert stderr.startswith("Error: ") and stderr.count("\n") == 1, (name, stderr)
        assert expected in stderr, (name, stderr)
        assert len(stderr) < 1000, (name, len(stderr))
        assert not Path(args[1]).exists()
    assert not any(Path(next(iter(hostile.values()))[0][1]).parent.iterdir())
