"""Command line for checkpoint chores: thin click commands over :mod:`ugatit.checkpoint`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import click

from ugatit.checkpoint import export_generator, init_checkpoint, read_meta, read_state_dicts
from ugatit.config import ModelConfig
from ugatit.errors import UgatitError
from ugatit.networks import GENERATORS, NETWORK_NAMES
from ugatit.options import field_option, given
from ugatit.train import TrainConfig


def _fail(exc: UgatitError) -> None:
    raise click.ClickException(str(exc))


@click.group(help="U-GAT-IT checkpoint tools for eo2sar.")
def main() -> None:
    pass


@main.command(help="Write a generator-only checkpoint (our format) from any checkpoint. "
                   "The published 512 MiB seed file becomes 42 MB (21 MB with --fp16).")
@click.argument("src", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("dst", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--fp16", is_flag=True, help="Store weights as float16 (they load back as "
              "float32; outputs change by ~1e-3). Default: float32.")
@click.option("--with-b2a", is_flag=True, help="Keep genB2A too (SAR->EO).")
@click.option("--overwrite", is_flag=True, help="Replace DST if it exists.")
def export(src: Path, dst: Path, fp16: bool, with_b2a: bool, overwrite: bool) -> None:
    if dst.exists() and not overwrite:
        raise click.ClickException(f"{dst}: exists; pass --overwrite to replace it")
    nets = GENERATORS if with_b2a else ("genA2B",)
    try:
        export_generator(src, dst, half=fp16, networks=nets)
    except UgatitError as exc:
        _fail(exc)
    click.echo(f"wrote {dst} ({os.path.getsize(dst) / 2**20:.1f} MiB, {', '.join(nets)}"
               f"{', fp16' if fp16 else ''})")


@main.command(help="Write a RANDOMLY initialised checkpoint (tests, benchmarks, demos). "
                   "Its output is noise-like, not SAR: it is not a trained model.")
@click.argument("dst", type=click.Path(dir_okay=False, path_type=Path))
@field_option(ModelConfig, "ngf", "Generator base width.", type=int)
@field_option(ModelConfig, "n_res", "Residual blocks.", type=int)
@click.option("--full", is_flag=True, help="Full variant (fixed input size) instead of light.")
@field_option(ModelConfig, "img_size", "Training size (full variant).", type=int)
@field_option(ModelConfig, "ndf", "Discriminator base width.", type=int)
@click.option("--all-networks", is_flag=True, help="All six networks, not only generators.")
@click.option("--seed-format", is_flag=True, help="Write the original six-dict format.")
@click.option("--seed", default=0, show_default=True, help="Random seed.")
def init(dst: Path, full: bool, all_networks: bool, seed_format: bool, seed: int,
         **model: Any) -> None:
    cfg = ModelConfig(light=not full, **given(model))  # ModelConfig's defaults otherwise
    nets = NETWORK_NAMES if all_networks else GENERATORS
    init_checkpoint(dst, cfg, seed=seed, networks=nets, fmt="seed" if seed_format else "eo2sar")
    click.echo(f"wrote {dst} ({os.path.getsize(dst) / 2**20:.2f} MiB, random weights, {cfg})")


@main.command(help="Print a checkpoint's format, config and networks as JSON.")
@click.argument("src", type=click.Path(dir_okay=False, path_type=Path))
def info(src: Path) -> None:
    t0 = time.perf_counter()
    try:
        fmt, nets, cfg = read_state_dicts(src)
        radiometry = read_meta(src).get("radiometry")
    except UgatitError as exc:
        _fail(exc)
    click.echo(json.dumps({
        "path": str(src), "format": fmt, "config": cfg.to_dict(),
        # the radiometric contract: the bands the model takes (eo.common_names), its
        # scaling, the polarisations it gives and their dB ranges; null for a seed file
        "radiometry": radiometry,
        "networks": {n: {"keys": len(sd), "parameters": int(sum(t.numel() for t in sd.values())),
                         "dtype": str(next(iter(sd.values())).dtype)}
                     for n, sd in nets.items()},
        "read_seconds": round(time.perf_counter() - t0, 3),
    }, indent=1))


# Flags of `train`: field of TrainConfig -> (click type, help). Defaults live in TrainConfig
# alone: every flag defaults to None ("not given"), so YAML values survive unless a flag
# overrides them, and its help shows the TrainConfig default (ugatit/options.py).
_TRAIN_FLAGS: dict[str, tuple[Any, str]] = {
    "dataset": (click.Path(file_okay=False), "Folder with trainA (EO), trainB (SAR), testA/B."),
    "out": (click.Path(file_okay=False), "Output folder (checkpoints/, samples/, CSV)."),
    "iterations": (click.IntRange(min=1), "Training steps."),
    "batch_size": (click.IntRange(min=1), "Images per domain per step per process."),
    "ngf": (click.IntRange(min=1), "Generator width; also the discriminators' unless --ndf."),
    "ndf": (click.IntRange(min=1), "Discriminator width."),
    "n_res": (click.IntRange(min=1), "Residual blocks."),
    "img_size": (int, "Training crop size, a multiple of 4."),
    "device": (str, "auto, cpu, cuda or cuda:N."),
    "precision": (click.Choice(["fp32", "bf16"]), "fp32 (reference) or bf16 autocast."),
    "seed": (int, "Seed of weights, sample order and augmentation."),
    "save_every": (click.IntRange(min=1), "Checkpoint period in steps."),
    "sample_every": (click.IntRange(min=1), "Sample sheet + loss curve period."),
    "log_every": (click.IntRange(min=1), "losses.csv row period."),
    "keep": (click.IntRange(min=0), "Checkpoints kept, 0 = all."),
    "lr": (float, "Adam learning rate."),
    "paired_weight": (click.FloatRange(min=0), "L1 (dB) to co-registered SAR of pairs with "
                      "the same name in trainA/trainB; 0 = the original recipe."),
    "workers": (click.IntRange(min=0), "DataLoader workers per process."),
    "threads": (click.IntRange(min=0), "torch threads per process; 0 = one per core. 1 is "
                "~10x faster on a loaded 2-core CPU (docs/training.md)."),
    "n_dis_global": (click.IntRange(min=3), "Global discriminator layers."),
    "n_dis_local": (click.IntRange(min=3), "Local discriminator layers."),
}
_NONE_DEFAULTS = {"ndf": "= ngf"}  # what a None default of TrainConfig means


def _train_options(fn: Any) -> Any:
    for name, (kind, text) in reversed(_TRAIN_FLAGS.items()):
        fn = field_option(TrainConfig, name, text, type=kind,
                          default_text=_NONE_DEFAULTS.get(name))(fn)
    return fn


@main.command(help="Train U-GAT-IT (the original recipe) on a tile dataset; see "
                   "docs/training.md. Options: TrainConfig defaults < --config YAML < flags.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True,
                                                         path_type=Path),
              help="YAML of TrainConfig keys (configs/train.yaml).")
@_train_options
@click.option("--light/--full", default=None, help="Light (default) or full U-GAT-IT.")
@click.option("--resume", is_flag=True, default=None,
              help="Continue from the latest OUT/checkpoints/params_*.pt.")
def train(config_path: Path | None, **flags: Any) -> None:
    import logging

    from ugatit.io import YamlConfigError, read_yaml_config
    from ugatit.train import train as run_training

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        merged: dict[str, Any] = {}
        if config_path is not None:
            try:  # bounded, aliases refused: a YAML bomb is one line, not gigabytes
                loaded = read_yaml_config(config_path) or {}
            except (YamlConfigError, OSError) as exc:
                raise UgatitError(f"{config_path}: {exc}") from None
            if not isinstance(loaded, dict):
                raise UgatitError(f"{config_path}: expected a mapping of options")
            merged.update(loaded)
        merged.update({k: v for k, v in flags.items() if v is not None})
        final = run_training(TrainConfig.from_dict(merged))
    except UgatitError as exc:
        _fail(exc)
    click.echo(f"final checkpoint: {final}")


@main.command(help="Evaluate checkpoints on test tiles (any sizes): paired correlation "
                   "(9x9 box-filtered), SSIM and PSNR with the real SAR in dB; structure kept "
                   "from the input; dB-histogram distance and speckle vs real SAR; the same "
                   "for the baselines (gray, red, NIR, NDVI, NDWI, best single, linear "
                   "regression fitted on the training pairs, random weights). PNG or "
                   "multiband TIFF tiles, per polarisation. Ranks checkpoints (paired: by "
                   "corr9; unpaired: by radiometry above a structure floor) and names the "
                   "best "
                   "(docs/evaluation.md).")
@click.option("--checkpoint", "checkpoints", multiple=True, required=True,
              type=click.Path(path_type=Path),
              help="A checkpoint file or a folder of *.pt files; repeat for several.")
@click.option("--dataset", type=click.Path(file_okay=False, path_type=Path),
              help="Tile-builder dataset: testA (EO) is translated, testB is the real SAR.")
@click.option("--pairs", nargs=2, type=click.Path(file_okay=False, path_type=Path),
              metavar="EO_DIR SAR_DIR", help="Co-registered EO and SAR tiles of the same names.")
@click.option("--fit-pairs", nargs=2, type=click.Path(file_okay=False, path_type=Path),
              metavar="EO_DIR SAR_DIR", default=None,
              help="Co-registered tiles (same names, cut like the test tiles) that the "
                   "best-single and linear baselines are fitted on. [default: the dataset's "
                   "trainA/trainB tiles of the same names]")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Report path. Default: beside the checkpoint (or inside its folder), "
                   "else ./evaluation.json.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--features", type=click.Path(dir_okay=False, path_type=Path),
              help="TorchScript feature extractor ([N,3,H,W] in [0,1] -> [N,D]) for KID/FID.")
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N test tiles.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random-weight baseline.")
@click.option("--tf32", is_flag=True, help="Allow TF32 on CUDA (faster, not float32-exact; "
                                           "off by default, as everywhere in eo2sar).")
def evaluate(checkpoints: tuple[Path, ...], dataset: Path | None,
             pairs: tuple[Path, Path] | None, fit_pairs: tuple[Path, Path] | None,
             json_path: Path | None, device: str, batch_size: int, features: Path | None,
             limit: int | None, seed: int, tf32: bool) -> None:
    from ugatit import evaluate as ev  # metrics libraries load only for this command
    from ugatit.device import resolve_device

    if (dataset is None) == (not pairs):
        raise click.UsageError("give exactly one of --dataset DIR or --pairs EO_DIR SAR_DIR")
    try:
        opts = ev.Options(device=resolve_device(device), batch_size=batch_size, seed=seed,
                          features=features, tf32=tf32)
        if features is not None and not features.is_file():
            raise ev.EvaluationError(f"{features}: feature extractor not found")
        paths = ev.find_checkpoints(checkpoints)
        data = ev.load_data(dataset=dataset, pairs=tuple(pairs) if pairs else None, limit=limit,
                            fit_pairs=tuple(fit_pairs) if fit_pairs else None)
        report = ev.evaluate(paths, data, opts, log=lambda s: click.echo(s, err=True))
    except UgatitError as exc:
        _fail(exc)
    click.echo(ev.format_table(report))
    out = ev.write_json(report, json_path or ev.default_json_path(checkpoints))
    click.echo(f"wrote {out}")
