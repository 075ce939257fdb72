"""Builders of small, structurally faithful products for the tests (imported, never
collected): Landsat Collection 2 folders (MTL in ODL), Sentinel-2 L2A SAFE folders, STAC
Items over single-band GeoTIFFs. Real file names and metadata layouts, the pixels of a
crop of a bundled scene, so a product run can be compared with the run on the crop.
"""

from __future__ import annotations

import json
from pathlib import Path

import rasterio

L2_ID = "LC08_L2SP_224078_20200101_20200113_02_T1"
L1_ID = "LE07_L1TP_224078_20200101_20200127_02_T1"
S2_TILE = "T21JXN"
S2_STAMP = "20200101T133231"
S2_SAFE = f"S2A_MSIL2A_{S2_STAMP}_N0500_R081_{S2_TILE}_20200101T170000.SAFE"


COLOURS = ("red", "green", "blue")


def write_band(src: Path, band: int, dst: Path, driver: str = "GTiff", scale: int = 1,
               **options) -> None:
    """Band `band` of `src` as a one-band file (`scale` > 1: a coarser copy)."""
    with rasterio.open(src) as ds:
        data = ds.read(band)[::scale, ::scale]
        t = ds.transform
        profile = {"driver": driver, "width": data.shape[1], "height": data.shape[0],
                   "count": 1, "dtype": "uint16", "crs": ds.crs,
                   "transform": rasterio.Affine(t.a * scale, 0, t.c, 0, t.e * scale, t.f),
                   **options}
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data, 1)


def mtl_text(product: str, level: str, spacecraft: str, files: dict[int, str]) -> str:
    """An MTL in Collection 2's ODL layout (groups as USGS writes them)."""
    lines = ["GROUP = LANDSAT_METADATA_FILE", "  GROUP = PRODUCT_CONTENTS",
             '    ORIGIN = "Image courtesy of the U.S. Geological Survey"',
             f'    LANDSAT_PRODUCT_ID = "{product}"', f'    PROCESSING_LEVEL = "{level}"',
             "    COLLECTION_NUMBER = 02", '    COLLECTION_CATEGORY = "T1"']
    lines += [f'    FILE_NAME_BAND_{n} = "{name}"' for n, name in sorted(files.items())]
    lines += [f'    FILE_NAME_METADATA_ODL = "{product}_MTL.txt"',
              "  END_GROUP = PRODUCT_CONTENTS", "  GROUP = IMAGE_ATTRIBUTES",
              f'    SPACECRAFT_ID = "{spacecraft}"', '    SENSOR_ID = "OLI_TIRS"',
              "    WRS_PATH = 224", "    WRS_ROW = 78", "    DATE_ACQUIRED = 2020-01-01",
              '    SCENE_CENTER_TIME = "13:21:15.4421820Z"', "  END_GROUP = IMAGE_ATTRIBUTES"]
    if level.startswith("L2"):
        lines.append("  GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS")
        for n in sorted(files):
            lines += [f"    REFLECTANCE_MULT_BAND_{n} = 2.75E-05",
                      f"    REFLECTANCE_ADD_BAND_{n} = -0.200000"]
        lines.append("  END_GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS")
    lines.append("  GROUP = LEVEL1_RADIOMETRIC_RESCALING")  # also in L2 MTLs: not the SR
    for n in sorted(files):
        lines += [f"    REFLECTANCE_MULT_BAND_{n} = 2.0000E-05",
                  f"    REFLECTANCE_ADD_BAND_{n} = -0.100000"]
    lines += ["  END_GROUP = LEVEL1_RADIOMETRIC_RESCALING",
              "END_GROUP = LANDSAT_METADATA_FILE", "END"]
    return "\n".join(lines) + "\n"


def landsat_l2(root: Path, bgr: Path) -> Path:
    folder = root / L2_ID
    folder.mkdir(parents=True)
    files = {n: f"{L2_ID}_SR_B{n}.TIF" for n in range(1, 8)}
    src_band = {1: 1, 2: 1, 3: 2, 4: 3, 5: 3, 6: 3, 7: 3}  # B2 blue, B3 green, B4 red
    for n, name in files.items():
        write_band(bgr, src_band[n], folder / name)
    (folder / f"{L2_ID}_MTL.txt").write_text(mtl_text(L2_ID, "L2SP", "LANDSAT_8", files))
    return folder


def mtd_msil2a(granule: str, baseline: str = "05.00", product: str = S2_SAFE) -> str:
    image_files = "\n".join(
        f"<IMAGE_FILE>GRANULE/{granule}/IMG_DATA/R{r}/{S2_TILE}_{S2_STAMP}_{b}_{r}</IMAGE_FILE>"
        for r in ("10m", "20m") for b in ("B02", "B03", "B04"))
    offsets = "\n".join(f'<BOA_ADD_OFFSET band_id="{i}">-1000</BOA_ADD_OFFSET>'
                        for i in range(13))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
<n1:General_Info>
<Product_Info>
<PRODUCT_START_TIME>2020-01-01T13:32:31.024Z</PRODUCT_START_TIME>
<PRODUCT_STOP_TIME>2020-01-01T13:32:31.024Z</PRODUCT_STOP_TIME>
<PRODUCT_URI>{product}</PRODUCT_URI>
<PROCESSING_LEVEL>Level-2A</PROCESSING_LEVEL>
<PRODUCT_TYPE>S2MSI2A</PRODUCT_TYPE>
<PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
<Product_Organisation><Granule_List><Granule granuleIdentifier="{granule}" imageFormat="JPEG2000">
{image_files}
</Granule></Granule_List></Product_Organisation>
</Product_Info>
<Product_Image_Characteristics>
<Special_Values><SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT>
<SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX></Special_Values>
<QUANTIFICATION_VALUES_LIST>
<BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>
</QUANTIFICATION_VALUES_LIST>
<BOA_ADD_OFFSET_VALUES_LIST>
{offsets}
</BOA_ADD_OFFSET_VALUES_LIST>
</Product_Image_Characteristics>
</n1:General_Info>
</n1:Level-2A_User_Product>
"""


def sentinel2_l2a(root: Path, bgr: Path, product: str = S2_SAFE, nir: bool = False) -> Path:
    """A Sentinel-2 L2A SAFE of `bgr`'s pixels: B02, B03, B04 at 10 and 20 m; `nir`: also
    B08 (10 m) and B8A (20 m), both the red band's pixels (a multispectral model's input)."""
    granule = f"L2A_{S2_TILE}_A023744_{S2_STAMP}"
    safe = root / product
    img = safe / "GRANULE" / granule / "IMG_DATA"
    extra = {"10m": (("B08", 3),), "20m": (("B8A", 3),)} if nir else {}
    for res, scale in (("10m", 1), ("20m", 2)):  # R20m: the same bands at half size
        (img / f"R{res}").mkdir(parents=True)
        for name, band in (("B02", 1), ("B03", 2), ("B04", 3), *extra.get(res, ())):
            write_band(bgr, band, img / f"R{res}" / f"{S2_TILE}_{S2_STAMP}_{name}_{res}.jp2",
                       driver="JP2OpenJPEG", scale=scale, QUALITY="100", REVERSIBLE="YES")
    (safe / "GRANULE" / granule / "MTD_TL.xml").write_text(
        '<?xml version="1.0"?><n1:Level-2A_Tile_ID xmlns:n1="https://psd-14.sentinel2.eo.'
        f'esa.int/PSD/S2_PDI_Level-2A_Tile_Metadata.xsd"><n1:General_Info><TILE_ID>{granule}'
        "</TILE_ID></n1:General_Info></n1:Level-2A_Tile_ID>\n")
    for sub in ("AUX_DATA", "DATASTRIP", "HTML", "rep_info"):
        (safe / sub).mkdir()
    (safe / "manifest.safe").write_text("<xfdu:XFDU/>\n")
    (safe / "MTD_MSIL2A.xml").write_text(mtd_msil2a(granule, product=product))
    return safe


def split_bands(src: Path, folder: Path, names=COLOURS, **profile) -> list[Path]:
    """One single-band GeoTIFF per band of `src` (optionally with other profile keys)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    with rasterio.open(src) as ds:
        base = {**ds.profile, "count": 1, "tiled": False}
        base.pop("blockxsize", None)
        base.pop("blockysize", None)
        for i, name in enumerate(names, 1):
            path = folder / f"{name}.tif"
            with rasterio.open(path, "w", **{**base, **profile}) as out:
                out.write(ds.read(i), 1)
            paths.append(path)
    return paths


def item_dict(ident: str, assets: dict, style: str = "eo") -> dict:
    """A minimal STAC Item with `assets` {key: (href, common_name or None)}."""
    table = {}
    for key, (href, common) in assets.items():
        asset = {"href": href, "type": "image/tiff; application=geotiff", "roles": ["data"]}
        if common and style == "eo":  # STAC 1.0 + eo extension
            asset["eo:bands"] = [{"name": key, "common_name": common}]
        elif common:  # STAC 1.1 bands
            asset["bands"] = [{"name": key, "eo:common_name": common}]
        table[key] = asset
    return {"type": "Feature", "stac_version": "1.1.0" if style != "eo" else "1.0.0",
            "id": ident, "geometry": None,
            "properties": {"datetime": "2019-08-04T10:31:00Z"}, "links": [], "assets": table}


def stac_item(path: Path, assets: dict, style: str = "eo", ident: str = "chip-1") -> Path:
    """item_dict written at `path`."""
    path.write_text(json.dumps(item_dict(ident, assets, style)))
    return path
