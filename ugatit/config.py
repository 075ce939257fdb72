"""Architecture settings of a U-GAT-IT model.

The published (seed-format) checkpoints do not record their architecture: it is inferred
from tensor shapes (:func:`ugatit.checkpoint.infer_config`). Our own format stores this
dataclass next to the weights, nanoGPT-style, so a checkpoint always carries its config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

#: The radiometric contract's defaults, for a checkpoint that carries none (the published
#: seed file): the EO stretch percentiles and the SAR dB range that unit 0..1 maps to.
#: The pipeline (pipeline.inputs.radiometry) and the evaluator read them from here.
DEFAULT_PERCENTILES = (2.0, 98.0)
DEFAULT_SAR_DB_RANGE = (-25.0, 0.0)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the six networks of a U-GAT-IT checkpoint.

    Defaults are the published eo2sar model: light variant, ngf 64, 4 residual blocks,
    256 px tiles, discriminators of width 64 with 7 (global) and 5 (local) layers.
    """

    ngf: int = 64  # generator base width; encoder widths are ngf, 2ngf, 4ngf
    n_res: int = 4  # residual blocks in the encoder and adaILN blocks in the decoder
    light: bool = True  # light: gamma/beta from the spatial mean; full: from the NCHW flatten
    img_size: int = 256  # training size; the full variant only accepts exactly this size
    in_ch: int = 3  # input channels of genA2B (RGB)
    out_ch: int = 3  # output channels of genA2B
    ndf: int = 64  # discriminator base width
    n_dis_global: int = 7  # layers of disGA/disGB
    n_dis_local: int = 5  # layers of disLA/disLB

    def __post_init__(self) -> None:
        if self.ngf < 1 or self.n_res < 1 or self.ndf < 1:
            raise ValueError(f"ngf, n_res and ndf must be positive, got {self}")
        if self.img_size % 4:
            raise ValueError(
                f"img_size must be divisible by 4 (two stride-2 convs), got {self.img_size}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Build from a stored dict, ignoring unknown keys written by newer versions."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
