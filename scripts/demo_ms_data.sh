#!/usr/bin/env bash
# The multispectral demo model's training data (checkpoints/README.md, "eo2sar_demo_ms"):
# Sentinel-2 red, green, blue, NIR as reflectance in; Sentinel-1 VV and VH in absolute dB
# out (VV [-25, 0], VH [-32.5, 0]), 128 px float32 GeoTIFF tiles, stride 64.
#   paired (same grid, same or near day): SEN12MS-CR fall_139 + winter_112 (L1C),
#     Sen1Floods11 India_900498 (flood, L1C), SSL4EO-S12 June (S1 warped onto S2);
#   unpaired SAR with water: the other 11 Sen1Floods11 flood chips, SEN12MS-CR 1868,
#     SSL4EO-S12 September, BigEarthNet 70_48;
#   unpaired optical with water: Sen1Floods11 USA_430764 (flood), SSL4EO-S12 August.
# Held out (never cut here): the four BigEarthNet S2/S1 pairs, two to choose the
# checkpoint (87_48, 56_35), two to report it (36_85, 4_55).
# Usage: scripts/demo_ms_data.sh [OUT]   (default data/demo_ms/dataset; PY=python)
set -euo pipefail
OUT=${1:-data/demo_ms/dataset}
PY=${PY:-.venv/bin/python}
D=data/sentinel1
rm -rf "$OUT"  # cut anew: the recipe, not an accumulation
common=(--out "$OUT" --tile-size 128 --stride 64 --eo-bands red,green,blue,nir
        --eo-scale reflectance --sar-pols VV,VH --sar-units db --quiet)
# L1C exports store DN = 10000 x TOA reflectance without band scale tags: declared
"$PY" -m pipeline tiles "${common[@]}" --paired --reflectance-scale 0.0001 \
    --eo "$D/sen12mscr/s2_cloudfree/ROIs1970_fall_139_p839.tif" \
    --eo "$D/sen12mscr/s2_cloudfree/ROIs2017_winter_112_p797.tif" \
    --sar "$D/sen12mscr/s1/ROIs1970_fall_139_p839.tif" \
    --sar "$D/sen12mscr/s1/ROIs2017_winter_112_p797.tif"
"$PY" -m pipeline tiles "${common[@]}" --paired --reflectance-scale 0.0001 \
    --eo "$D/sen1floods11/S2/India_900498_S2Hand.tif" \
    --sar "$D/sen1floods11/S1/India_900498_S1Hand.tif"
"$PY" -m pipeline tiles "${common[@]}" --paired --resample-sar \
    --eo "$D/ssl4eo/s2a/0000200/20200604T054639_20200604T054831_T43RCP" \
    --sar "$D/ssl4eo/s1/0000200/S1A_IW_GRDH_1SDV_20200607T010800_20200607T010825_032904_03CFBA_D457"
sar_chips=()
for f in "$D"/sen1floods11/S1/*_S1Hand.tif; do
    case "$f" in *India_900498*) ;; *) sar_chips+=(--sar "$f") ;; esac
done
"$PY" -m pipeline tiles "${common[@]}" "${sar_chips[@]}" \
    --sar "$D/sen12mscr/ROIs1868_summer_s1_19_p30.tif" \
    --sar "$D/ssl4eo/s1/0000200/S1A_IW_GRDH_1SDV_20200903T131212_20200903T131237_034195_03F8F5_AC1C" \
    --sar "$D/bigearthnet/S1A_IW_GRDH_1SDV_20170613T165043_33UUP_70_48"
"$PY" -m pipeline tiles "${common[@]}" --reflectance-scale 0.0001 \
    --eo "$D/sen1floods11/S2/USA_430764_S2Hand.tif"
"$PY" -m pipeline tiles "${common[@]}" \
    --eo "$D/ssl4eo/s2a/0000200/20200813T054639_20200813T054952_T43RCP"
"$PY" - "$OUT" <<'PY'
import json, sys
doc = json.load(open(f"{sys.argv[1]}/dataset.json"))
print("counts", doc["counts"]); print("radiometry", json.dumps(doc["radiometry"]))
PY
