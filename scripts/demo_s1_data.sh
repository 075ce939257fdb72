#!/usr/bin/env bash
# The demo model's data (`make demo-s1-data`; docs/training.md "The demo model"), from the
# bundled rasters only (tests/data, tests/data/sentinel1):
#   data/demo_s1/dataset  (R=data/demo_s1 by default) training tiles: trainA = optical (Landsat 8/7, Haiti, SSL4EO-S12
#                         Sentinel-2), trainB = SAR on ONE absolute scale, sigma0 [-25, 0] dB
#                         (calibrated Sentinel-1 VV: pyroSAR, SEN12MS-CR, SSL4EO-S12; AIRSAR
#                         and Pi-SAR co-pol), plus co-registered pairs under the same name in
#                         both (SSL4EO-S12 June S2/S1, SpaceNet 6) for --paired-weight;
#   data/demo_s1/vrt      VRT stacks of the separate band files: the BigEarthNet Sentinel-2
#                         patches (R, G, B, NIR) kept OUT of training, the held-out pairs of
#                         the evaluation (selection: 87_48, 56_35; report: 36_85, 4_55).
set -euo pipefail
PY=${PY:-.venv/bin/python}
S=tests/data/sentinel1
R=${R:-data/demo_s1}
V=$R/vrt
D=$R/dataset
rm -rf "$D" "$V"
mkdir -p "$V"

stack() { "$PY" -m scripts.stack_bands "$@"; }
BEN=$S/bigearthnet
for id in 20170613T101031_87_48 20171221T112501_56_35 20170617T113321_36_85 20170617T113321_4_55; do
  f=$BEN/S2A_MSIL2A_$id/S2A_MSIL2A_${id}
  stack "$V/ben_s2_${id##*T??????_}.vrt" "${f}_B04.tif" "${f}_B03.tif" "${f}_B02.tif" "${f}_B08.tif"
done
SS2=$S/ssl4eo/s2a/0000200
SS1=$S/ssl4eo/s1/0000200
JUNE_S2=$SS2/20200604T054639_20200604T054831_T43RCP
AUG_S2=$SS2/20200813T054639_20200813T054952_T43RCP
stack "$V/ssl4eo_s2_20200604.vrt" $JUNE_S2/B4.tif $JUNE_S2/B3.tif $JUNE_S2/B2.tif $JUNE_S2/B8.tif
stack "$V/ssl4eo_s2_20200813.vrt" $AUG_S2/B4.tif $AUG_S2/B3.tif $AUG_S2/B2.tif $AUG_S2/B8.tif
# June S1 (3 days after the S2) warped onto the S2 grid: the two grids differ by a few px
stack --like $JUNE_S2/B4.tif "$V/ssl4eo_s1_20200607_vv.vrt" \
  $SS1/S1A_IW_GRDH_1SDV_20200607T010800_20200607T010825_032904_03CFBA_D457/VV.tif
stack "$V/ssl4eo_s1_20200903_vv.vrt" \
  $SS1/S1A_IW_GRDH_1SDV_20200903T131212_20200903T131237_034195_03F8F5_AC1C/VV.tif

T="$PY -m pipeline tiles -q --tile-size 128 --stride 64 --test-fraction 0"
echo "A: optical"
$T --out "$D" --eo tests/data/l8_224078_parana_bgr_uint16.tif --eo-bands 3,2,1 --eo-nodata 0 \
   --stride 192   # fewer Landsat tiles: it would be 90 % of domain A at stride 64
$T --out "$D" --eo tests/data/l7_olinda_6band_uint8.tif --eo-bands 3,2,1
$T --out "$D" --eo tests/data/haiti_rgbn_uint8.tif --eo-bands 1,2,3
$T --out "$D" --eo "$V/ssl4eo_s2_20200813.vrt" --eo-bands 1,2,3
echo "B: SAR, sigma0 dB mapped from [-25, 0] dB"
$T --out "$D" --sar $S/pyrosar/S1A__IW___A_20150309T173017_VV_grd_mli_geo_norm_db.tif \
   --sar $S/sen12mscr/ROIs1868_summer_s1_19_p30.tif --sar "$V/ssl4eo_s1_20200903_vv.vrt" \
   --sar-band 1 --sar-units db --sar-db-range=-25,0
$T --out "$D" --sar tests/data/airsar_sanfrancisco_fullpol_intensity.tif \
   --sar tests/data/pisar_tsukuba_fullpol_intensity.tif --sar-band 1 --sar-units linear \
   --sar-db-range=-25,0
echo "pairs (same name in trainA and trainB; all to train)"
$T --paired --min-valid 1 --out "$D" --eo "$V/ssl4eo_s2_20200604.vrt" --eo-bands 1,2,3 \
   --sar "$V/ssl4eo_s1_20200607_vv.vrt" --sar-units db --sar-db-range=-25,0
# SpaceNet 6: the SAR's top 39 % is NaN; 96 px tiles fit in the valid part. A dataset has
# one tile size, so they are cut into their own folder and copied in (the trainer resizes
# every tile to img_size + 30 anyway).
rm -rf "$R/sn6_pairs"
$T --paired --min-valid 1 --out "$R/sn6_pairs" --eo tests/data/sn6_rotterdam_eo_rgb.tif \
   --sar tests/data/sn6_rotterdam_sar_quadpol_db.tif --sar-band 1 --sar-units db \
   --sar-db-range=-25,0 --tile-size 96 --stride 24
cp "$R"/sn6_pairs/trainA/*.png "$D/trainA/"
cp "$R"/sn6_pairs/trainB/*.png "$D/trainB/"
echo "$D: trainA $(ls $D/trainA | wc -l), trainB $(ls $D/trainB | wc -l)," \
     "pairs $(comm -12 <(ls $D/trainA) <(ls $D/trainB) | wc -l)"
