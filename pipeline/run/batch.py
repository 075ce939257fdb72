"""Directory runs: every scene of a directory, resumable, one failure never stops the rest.

``python -m pipeline run scenes/ out/ --model ck.pt`` lands here. Per scene, the heavy
lifting (tiling, inference, atomic output) is ``run_scene``'s; this module adds what only
matters for many scenes:

- which entries are scenes: every product kind `pipeline run` reads on its own
  (pipeline/inputs/discovery.py: rasters, Sentinel-2 SAFE folders and zips, Landsat folders,
  STAC Item JSON), or the matches of ``pattern`` (a glob relative to the input
  directory; ``**`` recurses); and where each output goes (``out/<relative dir>/<product
  name>.tif``, so two directories with an ``a.tif`` each do not collide). A STAC
  Catalog, Collection or ItemCollection (pipeline/inputs/catalogs.py) gives its Items the same
  way: ``run_products`` is the runner of both;
- a manifest beside each output (:mod:`pipeline.run.manifest`) written after the output is
  complete, so a rerun skips exactly the scenes that are finished and current, and
  redoes stale, missing and half-done ones (a crash between output and manifest is
  redone, never trusted);
- error isolation: a corrupt scene is reported and the run goes on; the exit status is 1
  if anything failed, so a scheduler (cron, Airflow, SLURM) sees it;
- a summary table on stderr and a JSON run report in the output directory, both written
  at the end, also after Ctrl-C (the report says what finished before the interrupt).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from pipeline.errors import InputError, ModelError, OutputError, PipelineError
from pipeline.inputs.discovery import (
    Product,
    check_unique_outputs,
    find_products,
    fingerprint_product,
)
from pipeline.run.locks import OutputBusy, output_lock
from pipeline.run.manifest import (
    atomic_write_text,
    cached_sha256,
    check_manifest,
    config_fingerprint,
    manifest_path,
    software_versions,
    utc_now,
    write_manifest,
)
from pipeline.run.stac import COLLECTION_NAME, item_path, write_collection, write_item
from pipeline.urls import redact_text, redact_url
from ugatit.io import remove_stale_temps

__all__ = [
    "REPORT_NAME",
    "BatchReport",
    "SceneOutcome",
    "directory_products",
    "find_scenes",
    "heatmap_for",
    "output_for",
    "product_raster",
    "run_directory",
    "run_products",
    "scene_status",
]

log = logging.getLogger(__name__)

REPORT_NAME = "eo2sar_run_report.json"
REPORT_SCHEMA = "eo2sar.run-report/1"

Status = Literal["done", "skipped", "failed"]


@dataclass
class SceneOutcome:
    """What happened to one scene. ``message`` is the error, or why it was (re)done."""

    scene: str  # path relative to the input directory (or Item id), as shown in the table
    input: Path | str  # a URL (redacted) for a remote product
    output: Path
    status: Status
    seconds: float = 0.0
    tiles_total: int | None = None
    tiles_run: int | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input"] = str(self.input)
        d["output"] = str(self.output)
        return d


@dataclass
class BatchReport:
    """Outcome of a directory run; ``exit_code`` is what the CLI exits with."""

    input_dir: Path | str  # a catalog's URL (redacted) for a catalog run
    output_dir: Path
    pattern: str | None
    model_path: Path
    model_sha256: str
    config_hash: str
    started_at: str
    finished_at: str = ""
    interrupted: bool = False
    report_path: Path | None = None
    scenes: list[SceneOutcome] = field(default_factory=list)

    def _with(self, status: Status) -> list[SceneOutcome]:
        return [s for s in self.scenes if s.status == status]

    @property
    def done(self) -> list[SceneOutcome]:
        return self._with("done")

    @property
    def skipped(self) -> list[SceneOutcome]:
        return self._with("skipped")

    @property
    def failed(self) -> list[SceneOutcome]:
        return self._with("failed")

    @property
    def exit_code(self) -> int:
        """1 if any scene failed or the run was interrupted, else 0."""
        return 1 if self.failed or self.interrupted else 0

    def to_dict(self, config_settings: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "schema": REPORT_SCHEMA,
            "input_dir": str(self.input_dir),
            "output_dir": str(self.output_dir),
            "pattern": self.pattern,
            "model": {"path": str(self.model_path), "sha256": self.model_sha256},
            "config": {"hash": self.config_hash, "settings": config_settings},
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "interrupted": self.interrupted,
            "counts": {
                "total": len(self.scenes),
                "done": len(self.done),
                "skipped": len(self.skipped),
                "failed": len(self.failed),
            },
            "exit_code": self.exit_code,
            "versions": software_versions(),
            "scenes": [s.to_dict() for s in self.scenes],
        }


def _is_within(path: Path, parent: Path) -> bool:
    try:
        path.resolve().relative_to(parent.resolve())
    except ValueError:
        return False
    return True


def find_scenes(input_dir: Path, pattern: str | None = "*.tif", exclude: Path | None = None
                ) -> list[Path]:
    """The local products under `input_dir` (pipeline/inputs/discovery.py: `find_products`):
    files matching `pattern`, or with None every product kind. Hidden entries and
    anything under `exclude` (the output directory) are left out; an `exclude` that is
    the input directory itself is an OutputError."""
    products = find_products(Path(input_dir), pattern, exclude=exclude)
    return sorted({Path(p.source) for p in products})


def output_for(scene: Path, input_dir: Path, output_dir: Path) -> Path:
    """``in/sub/x.vrt`` -> ``out/sub/x.tif`` (the output is always a GeoTIFF; a product is
    named after itself: pipeline/inputs/discovery.py)."""
    rel = scene.relative_to(input_dir)
    return output_dir / rel.parent / (rel.stem + ".tif")


def heatmap_for(output: Path) -> Path:
    """``out/x.tif`` -> ``out/x.heatmap.tif`` (directory runs with ``--heatmap``)."""
    return output.with_name(output.stem + ".heatmap.tif")


def _manifest_state(
    scene: Path | Product, out: Path, *, model_sha: str, cfg_hash: str,
    heatmap_path: Path | None
) -> tuple[Any, bool, str]:
    """(input fingerprint, is the output current, why not / "up to date")."""
    if not isinstance(scene, Product):
        scene = Product(str(scene), Path(scene).name, Path(scene).stem, "raster")
    fp = fingerprint_product(scene)
    current, reason = check_manifest(
        out, input_fingerprint=fp, model_sha256=model_sha, config_hash=cfg_hash,
        heatmap_path=heatmap_path,
    )
    return fp, current, reason


def scene_status(
    scene: Path | Product, out: Path, *, model_sha: str, cfg_hash: str, overwrite: bool,
    heatmap: bool
) -> str:
    """What a directory run would do with one scene (for ``--dry-run``): ``skip (up to
    date)``, ``run (forced: --overwrite)`` or ``run (<why>)``; the same test as the run."""
    if overwrite:
        return "run (forced: --overwrite)"
    _, current, reason = _manifest_state(
        scene, out, model_sha=model_sha, cfg_hash=cfg_hash,
        heatmap_path=heatmap_for(out) if heatmap else None,
    )
    return "skip (up to date)" if current else f"run ({reason})"


def _format_table(scenes: list[SceneOutcome], width: int = 90) -> str:
    """Plain fixed-width table (no dependency): scene, status, tiles, seconds, message.

    Messages lose a leading "<input path>: " (the scene column names it) and are cut at
    ``width`` characters; the run report keeps them whole.
    """
    header = ("scene", "status", "tiles", "seconds", "message")
    rows = []
    for s in scenes:
        tiles = "" if s.tiles_total is None else f"{s.tiles_run}/{s.tiles_total}"
        msg = s.message.removeprefix(f"{s.input}: ").removeprefix(f"{s.scene}: ")
        msg = msg if len(msg) <= width else msg[: width - 3] + "..."
        rows.append((s.scene, s.status, tiles, f"{s.seconds:.1f}", msg))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _summary_line(report: BatchReport) -> str:
    text = (
        f"{len(report.scenes)} scenes: {len(report.done)} done, {len(report.skipped)} skipped,"
        f" {len(report.failed)} failed"
    )
    if report.interrupted:
        text += " (interrupted)"
    if report.report_path is not None:
        text += f"; report: {report.report_path}"
    return text


def _default_run_scene() -> Callable[..., Any]:
    # imported lazily: pipeline.run.scene pulls in torch and dask, which callers of
    # find_scenes / BatchReport (and the unit tests with a fake) do not need
    from pipeline.run.scene import run_scene

    return run_scene


def run_directory(
    input_dir: Path,
    output_dir: Path,
    *,
    pattern: str | None = None,
    excludes: Sequence[str] = (),
    **options: Any,
) -> BatchReport:
    """Run every product of ``input_dir`` (pipeline/inputs/discovery.py; ``pattern``: a glob
    instead, ``excludes``: globs to leave out) into ``output_dir``: ``run_products`` with
    ``options``, its keywords (``model_path`` and ``config`` required; ``overwrite``,
    ``run_scene``, ``heatmap``, ``quiet``, ``client``, ``stream``, ``assets``), passed on
    as they are rather than listed twice.

    Raises InputError (missing directory, no product, two products mapping to one
    output), ModelError (no checkpoint) or OutputError (output directory not writable)
    before any scene is run: those would fail every scene the same way.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    products = directory_products(input_dir, output_dir, pattern, excludes)
    return run_products(products, output_dir, input_label=input_dir, pattern=pattern,
                        **options)


def run_products(
    products: Sequence[Product],
    output_dir: Path,
    *,
    model_path: Path,
    config: Any,
    input_label: Path | str = "",
    pattern: str | None = None,
    overwrite: bool = False,
    run_scene: Callable[..., Any] | None = None,
    heatmap: bool = False,
    quiet: bool = False,
    client: Any = None,
    stream: TextIO | None = None,
    assets: Sequence[str] | None = None,
    sources_link: str | None = None,
) -> BatchReport:
    """Run every product into ``output_dir`` (its ``output``), resumable.

    Products whose output and manifest exist and match (input fingerprint, model
    sha256, config hash, output size) are skipped unless ``overwrite``; all others are
    (re)done with ``run_scene(input, output, model_path=..., config=..., heatmap_path=...,
    overwrite=True, client=..., progress=...)`` on the product's raster (a product,
    Item or URL is first made a VRT by pipeline.inputs.sources; ``overwrite=True`` there because
    a stale output is ours to replace). A product that raises is recorded as failed and
    the run goes on. The summary table goes to ``stream`` (default stderr; with ``quiet``
    only failed scenes are listed), the JSON report to ``output_dir/eo2sar_run_report.
    json``, the STAC Collection to ``output_dir/collection.json`` (with ``derived_from``
    links to the source Items; ``sources_link``: the catalog the run read, linked too).

    Raises InputError (two products mapping to one output), ModelError (no checkpoint)
    or OutputError (output directory not writable) before any product is run.
    """
    output_dir, model_path = Path(output_dir), Path(model_path)
    stream = sys.stderr if stream is None else stream
    if run_scene is None:
        run_scene = _default_run_scene()

    outputs = check_unique_outputs(products, output_dir)
    _check_model_and_output_dir(model_path, output_dir)

    model_sha = cached_sha256(model_path)  # once per process; the file may be 512 MiB
    cfg_hash, cfg_settings = config_fingerprint(config)
    report = BatchReport(
        input_dir=input_label, output_dir=output_dir, pattern=pattern,
        model_path=model_path, model_sha256=model_sha, config_hash=cfg_hash,
        started_at=utc_now(),
    )
    n = len(outputs)
    remove_stale_temps(output_dir / REPORT_NAME)  # a killed run's half-written report
    one = functools.partial(
        _run_locked, model_path=model_path, model_sha=model_sha,
        config=config, cfg_hash=cfg_hash, cfg_settings=cfg_settings, overwrite=overwrite,
        run_scene=run_scene, heatmap=heatmap, quiet=quiet, client=client,
        collection=output_dir / COLLECTION_NAME, assets=assets,
    )
    try:
        outcomes = _in_flight(one, list(outputs.items()), scenes_in_flight(config))
        for i, outcome in enumerate(outcomes, 1):
            report.scenes.append(outcome)
            # INFO, failures included: the closing table lists every failure once
            log.info("[%d/%d] %s: %s %s", i, n, outcome.scene, outcome.status,
                     outcome.message)
        _write_collection(report, outputs, sources_link)
    except KeyboardInterrupt:
        report.interrupted = True
        raise
    finally:
        report.finished_at = utc_now()
        report_path = output_dir / REPORT_NAME
        try:
            atomic_write_text(
                report_path, json.dumps(report.to_dict(cfg_settings), indent=2) + "\n"
            )
            report.report_path = report_path
        except OSError as e:  # the outputs are fine; say so rather than hide them
            log.error("could not write the run report %s: %s", report_path, e)
        shown = report.failed if quiet else report.scenes
        if shown:
            print(_format_table(shown), file=stream)
        if not quiet or report.failed or report.interrupted:
            print(_summary_line(report), file=stream)
    return report


def scenes_in_flight(config: Any) -> int:
    """Scenes run at once: the setting, else 2 on CUDA (one scene plans, blends and
    writes its COG on the host while the other keeps the GPU busy) and 1 on CPU (the
    cores are busy already; memory stays one scene's bound)."""
    value = getattr(config, "scenes_in_flight", None)
    if value:
        return int(value)
    return 2 if str(getattr(config, "device", "cpu")).startswith("cuda") else 1


def _in_flight(one: Callable[..., SceneOutcome], items: list[tuple[Path, Product]],
               width: int) -> Iterator[SceneOutcome]:
    """Outcomes of `one(scene, out)` for every (out, scene), in order, with up to `width`
    scenes running at once (threads: each scene still has one writer, its own thread).
    Scenes not yet started are cancelled on an interrupt."""
    if width <= 1:
        for out, scene in items:
            yield one(scene, out)
        return
    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="eo2sar-scene") as pool:
        futures = [pool.submit(one, scene, out) for out, scene in items]
        try:
            for fut in futures:
                yield fut.result()
        finally:
            for fut in futures:
                fut.cancel()


def directory_products(input_dir: Path, output_dir: Path, pattern: str | None,
                        excludes: Sequence[str]) -> list[Product]:
    """The products of a directory run; InputError if there is none."""
    if not input_dir.is_dir():
        raise InputError("input directory does not exist", path=input_dir,
                         hint="pass an existing directory of scenes, or a single scene file")
    products = find_products(input_dir, pattern, exclude=output_dir, excludes=excludes)
    if not products:
        what = ("no raster, product folder, SAFE zip or STAC Item" if pattern is None
                else f"no file matches --pattern {pattern!r}")
        raise InputError(
            what, path=input_dir,
            hint="use --pattern '**/*' to search subdirectories, '*.TIF' or '*.vrt' for"
            " other names (patterns are case-sensitive)",
        )
    return products


def _check_model_and_output_dir(model_path: Path, output_dir: Path) -> None:
    """The checkpoint exists and the output directory exists (made here) and is writable."""
    if not model_path.is_file():
        raise ModelError("checkpoint not found", path=model_path,
                         hint="pass --model with the path of a .pt checkpoint")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output directory: {e.strerror}", path=output_dir,
                          hint="choose a writable output directory") from e
    if not os.access(output_dir, os.W_OK):
        raise OutputError("output directory is not writable", path=output_dir,
                          hint="choose a writable output directory")


def _run_locked(product: Product, out: Path, **kwargs: Any) -> SceneOutcome:
    """`_run_one` holding the output's lock (pipeline/run/locks.py): the manifest is checked
    and the scene (re)done by one run at a time. A scene another run is writing right
    now is skipped with that reason: that run reports it."""
    shown = product.local_path or product.label
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with output_lock(out):
            return _run_one(product, out, **kwargs)
    except OutputBusy as e:
        return SceneOutcome(scene=product.name, input=shown, output=out, status="skipped",
                            message=e.format())
    except OSError as e:  # the output's subdirectory or lock file cannot be made
        return SceneOutcome(scene=product.name, input=shown, output=out, status="failed",
                            message=OutputError(f"cannot write here ({e.strerror})",
                                                path=out.parent).format())


def _run_one(
    product: Product,
    out: Path,
    *,
    model_path: Path,
    model_sha: str,
    config: Any,
    cfg_hash: str,
    cfg_settings: dict[str, Any] | None,
    overwrite: bool,
    run_scene: Callable[..., Any],
    heatmap: bool,
    quiet: bool,
    client: Any,
    collection: Path | None = None,
    assets: Sequence[str] | None = None,
) -> SceneOutcome:
    """Skip, or run and record, one product; never raises an Exception subclass.

    With `collection` (the run's collection.json), the scene's STAC Item is written after
    its manifest (pipeline/run/stac.py), and for a skipped scene whose Item is missing."""
    shown = product.local_path or product.label
    outcome = SceneOutcome(scene=product.name, input=shown, output=out, status="failed")
    heatmap_path = heatmap_for(out) if heatmap else None
    t0 = time.perf_counter()
    try:
        fp, current, reason = _manifest_state(
            product, out, model_sha=model_sha, cfg_hash=cfg_hash, heatmap_path=heatmap_path
        )
        if current and not overwrite:
            outcome.status, outcome.message = "skipped", reason
            if collection is not None and not item_path(out).exists():
                _write_item(outcome, product, heatmap_path, collection, None)
            return outcome
        # A manifest must never describe an output it did not see finish: drop the old one
        # before the output is replaced, so a crash in between leaves "no manifest".
        manifest_path(out).unlink(missing_ok=True)
        remove_stale_temps(manifest_path(out))  # a killed run's half-written manifest
        out.parent.mkdir(parents=True, exist_ok=True)
        started = utc_now()
        with product_raster(product, assets, model_path) as (raster, acquired, description):
            if description:
                log.info("%s: input: %s", product.name, description)
            extra = {} if product.kind == "raster" else {"source": _tag_source(product)}
            result = run_scene(
                raster, out, model_path=model_path, config=config,
                heatmap_path=heatmap_path, overwrite=True, client=client,
                progress=not quiet, write_stac=False, **extra,
            )
        result_dict = _result_fields(result)
        write_manifest(
            out, input_path=shown, input_fingerprint=fp, model_path=model_path,
            model_sha256=model_sha, config_hash=cfg_hash, config_settings=cfg_settings,
            started_at=started, result=result_dict, heatmap_path=heatmap_path,
            input_kind=product.kind,
        )
        if collection is not None:
            _write_item(outcome, product, heatmap_path, collection, acquired)
        outcome.status = "done"
        if overwrite:
            outcome.message = "forced (--overwrite)"
        else:
            outcome.message = "new" if reason == "no output" else f"redone: {reason}"
        outcome.tiles_total = result_dict.get("tiles_total")
        outcome.tiles_run = result_dict.get("tiles_run")
    except PipelineError as e:
        outcome.message = e.format()
        if product.kind != "raster" and product.name not in outcome.message:
            outcome.message = f"{product.name}: {outcome.message}"  # name the product
        log.debug("scene %s failed", product.name, exc_info=True)
    except Exception as e:  # isolate any failure to its scene (module doc); never bare
        outcome.message = redact_text(f"{product.name}: unexpected {type(e).__name__}: {e}")
        log.warning("scene %s failed with an unexpected error (traceback at -v)",
                    product.name)
        log.debug("traceback for %s", product.name, exc_info=True)
    finally:
        outcome.seconds = time.perf_counter() - t0
    return outcome


@contextlib.contextmanager
def product_raster(product: Product, assets: Sequence[str] | None,
                   model_path: Path | None = None) -> Iterator[tuple[Path, Any, str]]:
    """(the raster run_scene reads, acquisition time, the `input:` description) of a
    product: a local raster as it is, anything else the VRT pipeline.inputs.sources makes (in a
    temporary directory, removed when the `with` ends); a multispectral model's bands
    (`model_path`'s) by name."""
    if product.kind == "raster" and product.item is None and assets is None:
        yield Path(product.source), None, ""
        return
    from pipeline.inputs.sources import resolve_input
    from pipeline.run.model_io import input_names

    names = None if model_path is None else input_names(model_path)
    with resolve_input(product.source, assets=assets, item=product.item,
                       granule=product.granule, names=names) as resolved:
        yield resolved.path, resolved.acquired, resolved.description


def _tag_source(product: Product) -> str:
    """The input as the output's EO2SAR_INPUT tag names it (as a single run does): a
    local product by its name, a URL or Item without secrets."""
    if product.item is not None:
        return redact_url(product.item_href or product.source)
    local = product.local_path
    return local.name if local is not None else product.label


def _write_item(outcome: SceneOutcome, product: Product, heatmap_path: Path | None,
                collection: Path, acquired: Any) -> None:
    """The scene's STAC Item beside its output, linked to the run's Collection (and by
    `derived_from` to the product: the source Item for a catalog's or an Item file's);
    the id is the output's path relative to the output directory, so it is unique in the
    Collection."""
    rel = outcome.output.relative_to(collection.parent)
    item_id = rel.with_suffix("").as_posix().replace("/", "__")
    write_item(outcome.output, source=product.item_href or product.label,
               heatmap=heatmap_path, acquired=acquired,
               collection=collection.parent.resolve().name or "eo2sar",
               collection_href=collection, item_id=item_id)


def _write_collection(report: BatchReport, outputs: Mapping[Path, Product],
                      sources_link: str | None) -> None:
    """collection.json linking the Items of the run's finished and skipped scenes, and
    (derived_from) the source Items they came from; a failure to write it is logged
    (the outputs are fine), like the run report's."""
    ok = [s for s in report.scenes if s.status != "failed"]
    items = [item_path(s.output) for s in ok]
    sources = [redact_url(p.item_href) for s in ok
               if (p := outputs.get(s.output)) is not None and p.item_href]
    if sources_link:
        sources.append(redact_url(sources_link))
    try:
        write_collection(report.output_dir, [p for p in items if p.exists()],
                         sources=sources)
    except (OSError, ValueError) as e:
        log.error("could not write the STAC collection in %s: %s", report.output_dir, e)


def _result_fields(result: Any) -> dict[str, Any]:
    """JSON-able fields of run_scene's SceneResult (or a fake's), for the manifest."""
    fields = ("width", "height", "tiles_total", "tiles_run", "seconds", "model_sha256")
    out: dict[str, Any] = {}
    for name in fields:
        value = getattr(result, name, None)
        if value is None and isinstance(result, dict):
            value = result.get(name)
        if value is not None:
            out[name] = value
    return out
