# eo2sar: install, test, demo, bench.  Every variable can be overridden:
#   make install VENV=/tmp/env TORCH_SPEC="torch==2.13.0" PIP_ARGS="--index-url https://download.pytorch.org/whl/cu121"
VENV ?= .venv
PYTHON ?= python3
# torch is installed on its own, first, so the build (CPU or CUDA) is the user's choice:
# see "GPU install" in README.md. The exact pin matters: on the project's machines pip's
# find-links hold torch 2.13.0+cpu, which pip ranks above PyPI's 2.13.0 (a local version
# label sorts higher), so this takes the CPU wheel there and PyPI's CUDA build elsewhere.
TORCH_SPEC ?= torch==2.13.0
PIP_ARGS ?=
PYTEST_ARGS ?=
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Demo: the bundled real Landsat 8 scene (2041 x 1860, bands stored B,G,R, dark zero
# collar without a nodata tag) through the scene pipeline, then a side-by-side quicklook;
# and the seed's single-image app.py on the WorldView-2 chip. The demo model was trained by
# `make demo-model` on a handful of real SAR patches (checkpoints/README.md): a
# demonstration, not a production model. Pass DEMO_MODEL=eo2sar_params_latest.pt for the
# published model.
DEMO_SCENE ?= tests/data/l8_224078_parana_bgr_uint16.tif
DEMO_IMG ?= tests/data/sn6_rotterdam_eo_rgb.tif
DEMO_MODEL ?= checkpoints/eo2sar_demo_ngf16.pt
# A held-out BigEarthNet pair (never in training): Sentinel-2 band files and Sentinel-1 VV dB
DEMO_PAIR ?= 20170617T113321_36_85
DEMO_PAIR_NAME ?= ben_36_85
DEMO_PAIR_DIR ?= tests/data/sentinel1/bigearthnet
DEMO_PAIR_EO ?= $(DEMO_PAIR_DIR)/S2A_MSIL2A_$(DEMO_PAIR)
DEMO_PAIR_SAR ?= $(DEMO_PAIR_DIR)/S1A_IW_GRDH_1SDV_20170617T064724_29UPU_36_85/S1A_IW_GRDH_1SDV_20170617T064724_29UPU_36_85_VV.tif
# The multispectral demo model (red, green, blue, NIR reflectance in; VV, VH out), run on
# the same held-out patch (its bands picked by name from the band folder) and on the
# Sen1Floods11 India flood chip (13-band L1C GeoTIFF, DN = 10000 x reflectance)
DEMO_MS_MODEL ?= checkpoints/eo2sar_demo_ms_ngf16.pt
DEMO_FLOOD_EO ?= data/sentinel1/sen1floods11/S2/India_900498_S2Hand.tif
DEMO_FLOOD_SAR ?= data/sentinel1/sen1floods11/S1/India_900498_S1Hand.tif

.PHONY: install test test-all test-slow lint demo bench clean

install: $(STAMP)

# The stamp makes `make test` twice install once; touching pyproject.toml reinstalls.
$(STAMP): pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install $(PIP_ARGS) "$(TORCH_SPEC)"
	$(VPY) -m pip install -e ".[dev,xarray]"
	touch $@

test: $(STAMP)
	$(VPY) -m pytest $(PYTEST_ARGS)

test-all: $(STAMP)
	$(VPY) -m pytest -m "" $(PYTEST_ARGS)

# Only the tests marked slow (fault injection, the fuzz sweep): `make test` + `make
# test-slow` = `make test-all`, which is what .ci/run runs.
test-slow: $(STAMP)
	$(VPY) -m pytest -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(VPY) -m ruff check .

demo: $(STAMP)
	mkdir -p demo_out
	$(VPY) -m pipeline run $(DEMO_SCENE) demo_out/l8_parana_sar_like.tif --model $(DEMO_MODEL) \
		--bands 3,2,1 --heatmap demo_out/l8_parana_heatmap.tif --overwrite
	$(VPY) -m pipeline quicklook $(DEMO_SCENE) demo_out/l8_parana_sar_like.tif \
		demo_out/l8_parana_quicklook.png --bands 3,2,1
	$(VPY) app.py --device cpu --model_path $(DEMO_MODEL) --img $(DEMO_IMG) \
		--out demo_out/gen_sar_demo.png --heatmap
	$(VPY) -m pipeline view demo_out/l8_parana_sar_like.tif --input $(DEMO_SCENE) \
		--heatmap demo_out/l8_parana_heatmap.tif --out demo_out/l8_parana_viewer.html
	@echo "A Sentinel-2 patch the model never saw, beside the real Sentinel-1 VV of the same day:"
	$(VPY) -m pipeline run $(DEMO_PAIR_EO) demo_out/$(DEMO_PAIR_NAME)_sar_like.tif \
		--model $(DEMO_MODEL) --output-scale db --overwrite
	$(VPY) -m pipeline quicklook $(DEMO_PAIR_EO) demo_out/$(DEMO_PAIR_NAME)_sar_like.tif \
		demo_out/$(DEMO_PAIR_NAME)_quicklook.png --reference $(DEMO_PAIR_SAR)
	@echo "The multispectral model (NIR in; VV and VH out) on the same patch and on a flood:"
	$(VPY) -m pipeline run $(DEMO_PAIR_EO) demo_out/$(DEMO_PAIR_NAME)_ms_sar_like.tif \
		--model $(DEMO_MS_MODEL) --output-scale db --overwrite
	$(VPY) -m pipeline quicklook $(DEMO_PAIR_EO) demo_out/$(DEMO_PAIR_NAME)_ms_sar_like.tif \
		demo_out/$(DEMO_PAIR_NAME)_ms_quicklook.png --reference $(DEMO_PAIR_SAR)
	$(VPY) -m pipeline run $(DEMO_FLOOD_EO) demo_out/india_flood_ms_sar_like.tif \
		--model $(DEMO_MS_MODEL) --output-scale db --reflectance-scale 0.0001 --overwrite
	$(VPY) -m pipeline quicklook $(DEMO_FLOOD_EO) demo_out/india_flood_ms_sar_like.tif \
		demo_out/india_flood_ms_quicklook.png --reference $(DEMO_FLOOD_SAR)

# The viewer's browser test (tests/pipeline/viewing/test_viewer.py) drives the system Chromium
# and is skipped without it, except where EO2SAR_REQUIRE_CHROMIUM=1: then it fails.
# CI (.ci/run) installs Chromium when missing (.ci/ensure_chromium) and sets that, so it
# always runs there. Debian/Ubuntu: `sudo make chromium` (or apt-get install chromium);
# any other Chromium/Chrome: CHROMIUM=/path/to/chrome make test.
.PHONY: chromium
chromium:
	apt-get update && apt-get install -y chromium

# docs/images/viewer.png, the README's screenshot of the demo's viewer page
.PHONY: viewer-screenshot
viewer-screenshot: demo
	mkdir -p docs/images
	chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,860 \
		--virtual-time-budget=10000 --screenshot=docs/images/viewer.png \
		"file://$(CURDIR)/demo_out/l8_parana_viewer.html#swipe=0.5"

# Training: `make train DATASET=data/mine OUT=runs/mine ITERS=20000 DEVICE=cuda`. DATASET
# defaults to the demo tiles of `make tiles`; other empty variables fall back to
# configs/train.yaml (TRAIN_CONFIG); TRAIN_ARGS passes any other flag, e.g.
# TRAIN_ARGS="--ngf 16 --resume".
TRAIN_CONFIG ?= configs/train.yaml
DATASET ?=
OUT ?=
ITERS ?=
DEVICE ?=
TRAIN_ARGS ?=

.PHONY: train
train: $(STAMP)
	$(VPY) -m ugatit train --config $(TRAIN_CONFIG) --dataset $(or $(DATASET),data/demo/dataset) \
		$(if $(OUT),--out $(OUT)) $(if $(ITERS),--iterations $(ITERS)) \
		$(if $(DEVICE),--device $(DEVICE)) $(TRAIN_ARGS)

# Evaluation (docs/evaluation.md): every checkpoint of a training run (OUT, or CKPT = a file
# or folder) on a test set with testA/testB (EVAL_DATASET; the demo's paired SpaceNet 6
# tiles by default; tiles of mixed sizes are fine), ranked (paired: by the 9x9 box-filtered
# correlation with the real SAR, higher first; unpaired: by radiometry above a structure
# floor); table on screen, JSON beside the checkpoints. EVAL_ARGS passes any other flag,
# e.g. EVAL_ARGS="--features inception.ts --limit 50" or "--tf32" (CUDA, not float32-exact).
# Scene pairs with a real Sentinel-1 VV (water/land contrast, correlation vs the red band):
# python -m pipeline evaluate-pairs (docs/evaluation.md, "Scene pairs").
EVAL_DATASET ?= data/demo/paired
CKPT ?=
EVAL_ARGS ?=

.PHONY: evaluate
evaluate: $(STAMP)
	$(VPY) -m ugatit evaluate --checkpoint $(or $(CKPT),$(OUT),runs/train) \
		--dataset $(EVAL_DATASET) $(if $(DEVICE),--device $(DEVICE)) $(EVAL_ARGS)

# Training tiles (docs/tiles.md). `make tiles` with no EO/SAR builds the DEMO dataset from
# the bundled rasters: data/demo/dataset (A = the optical scenes, B = the SAR patches) and
# the SpaceNet 6 EO/SAR pair held out as a paired test set in data/demo/paired. Your own:
#   make tiles EO="l8.tif s2_dir/" SAR="s1_dir/" DATASET=data/mine TILE=256 STRIDE=128 \
#        TILES_ARGS="--eo-bands 3,2,1 --sar-db-range auto"
# (one invocation per band layout; later ones add to the same DATASET). EO/SAR items may be
# globs, passed quoted to the builder, and an EO item a folder of Sentinel-2 band files:
#   make tiles EO="$S1DATA/bigearthnet/S2*" SAR="$S1DATA/bigearthnet/S1*/*_VV.tif" \
#        DATASET=data/ben TILES_ARGS="--sar-units db --paired"
# (--paired: co-registered pairs into train and test; --resample-sar when grids differ.)
EO ?=
SAR ?=
TILE ?=
STRIDE ?=
TILES_ARGS ?=
DEMO_PAIRED ?= data/demo/paired
TILES_DATA := tests/data
# 128 px tiles every 64 px (the SAR patches are only 256 px); the SAR patches get 128 px
# split blocks (default: 2 x tile) so that each can give test tiles as well as training ones.
DEMO_TILES = $(VPY) -m pipeline tiles -q --out $(or $(DATASET),data/demo/dataset) \
	--tile-size $(or $(TILE),128) --stride $(or $(STRIDE),64)

.PHONY: tiles
tiles: $(STAMP)
ifneq ($(strip $(EO)$(SAR)),)
	$(VPY) -m pipeline tiles $(foreach f,$(EO),--eo '$(f)') $(foreach f,$(SAR),--sar '$(f)') \
		--out $(or $(DATASET),data/tiles) $(if $(TILE),--tile-size $(TILE)) \
		$(if $(STRIDE),--stride $(STRIDE)) $(TILES_ARGS)
else
	@echo "A: Landsat 8 (stored B,G,R; zero collar), Landsat 7, Haiti, WorldView-2 MS and pan"
	$(DEMO_TILES) --eo $(TILES_DATA)/l8_224078_parana_bgr_uint16.tif --eo-bands 3,2,1 \
		--eo-nodata 0
	$(DEMO_TILES) --eo $(TILES_DATA)/l7_olinda_6band_uint8.tif --eo-bands 3,2,1
	$(DEMO_TILES) --eo $(TILES_DATA)/haiti_rgbn_uint8.tif --eo-bands 1,2,3
	$(DEMO_TILES) --eo $(TILES_DATA)/sn6_rotterdam_wv2_ms_float64.tif --eo-bands 3,2,1
	$(DEMO_TILES) --eo $(TILES_DATA)/sn6_rotterdam_wv2_pan_uint16.tif --eo-bands 1,1,1
	@echo "B: Sentinel-1 (uncalibrated DN^2: auto dB range), AIRSAR and Pi-SAR (HH, linear)"
	$(DEMO_TILES) --sar $(TILES_DATA)/s1_labrador_dualpol_intensity.tif \
		--sar $(TILES_DATA)/s1_shanghai_dualpol_intensity.tif --sar-band 1 \
		--sar-units linear --sar-db-range auto --split-block 128
	$(DEMO_TILES) --sar $(TILES_DATA)/airsar_sanfrancisco_fullpol_intensity.tif \
		--sar $(TILES_DATA)/pisar_tsukuba_fullpol_intensity.tif --sar-band 1 \
		--sar-units linear --sar-db-range=-25,0 --split-block 128
	@echo "Paired test set: SpaceNet 6 optical + SAR (HH, dB), same grid"
	$(VPY) -m pipeline tiles -q --paired --test-fraction 1 --out $(DEMO_PAIRED) \
		--eo $(TILES_DATA)/sn6_rotterdam_eo_rgb.tif \
		--sar $(TILES_DATA)/sn6_rotterdam_sar_quadpol_db.tif --sar-band 1 --sar-units db \
		--tile-size $(or $(TILE),128) --stride $(or $(STRIDE),64)
endif

# How the demo model was made (checkpoints/README.md), end to end on CPU:
# 1. scripts/demo_s1_data.sh: training tiles from the bundled rasters, SAR on one absolute
#    scale (sigma0 [-25, 0] dB: calibrated Sentinel-1 VV, AIRSAR, Pi-SAR) and co-registered
#    pairs (SSL4EO-S12 June S2/S1, SpaceNet 6) for the paired term; the BigEarthNet pairs
#    stay out of training (selection: 87_48, 56_35; report: 36_85, 4_55);
# 2. the light model, ngf 16, 96 px crops, one torch thread (faster than two on a loaded
#    2-core machine), a checkpoint every 250 steps;
# 3. every checkpoint through the scene pipeline on the selection pairs (and two optical
#    scenes with open water): scripts/select_demo_model.py ranks them by a rule fixed
#    before looking; the chosen one is exported generator-only;
# 4. the report pairs, evaluated once, on the chosen model only (evaluate-pairs).
# GAN outputs swing between checkpoints: the choice is the evaluation's, never the last step.
DEMO_RUN ?= runs/demo_s1
DEMO_TRAIN_ARGS ?= --iterations 2500 --paired-weight 10 --lr 2e-4
BEN_PAIRS = tests/data/sentinel1/bigearthnet
.PHONY: demo-model demo-model-rgb

# The multispectral demo model (checkpoints/eo2sar_demo_ms_ngf16.pt): red, green, blue,
# NIR reflectance in, VV and VH in absolute dB out. 1. scripts/demo_ms_data.sh cuts
# float32 GeoTIFF tiles from data/sentinel1 (flood chips with water on the SAR side,
# three co-registered pairs, the BigEarthNet pairs held out); 2. ngf 16, 96 px, one torch
# thread, a checkpoint every 250 steps; 3. scripts/select_ms_model.py chooses by its rule
# (selection pairs + water gate); 4. the report pairs on the chosen one only.
DEMO_MS_RUN ?= runs/demo_ms
DEMO_MS_TRAIN_ARGS ?= --iterations 6000 --paired-weight 10 --lr 2e-4
demo-model: $(STAMP)
	PY=$(VPY) bash scripts/demo_ms_data.sh data/demo_ms/dataset
	$(VPY) -m ugatit train --config $(TRAIN_CONFIG) \
		--dataset data/demo_ms/dataset --out $(DEMO_MS_RUN) --ngf 16 --n-res 4 --img-size 96 \
		--device cpu --threads 1 --save-every 250 --sample-every 500 --keep 0 --workers 1 \
		--seed 0 $(DEMO_MS_TRAIN_ARGS)
	$(VPY) -m scripts.select_ms_model $(DEMO_MS_RUN)/checkpoints \
		--json $(DEMO_MS_RUN)/selection.json
	$(VPY) -m ugatit export $$($(VPY) -c "import json; print(json.load(open('$(DEMO_MS_RUN)/selection.json'))['best']['path'])") \
		$(DEMO_MS_RUN)/eo2sar_demo_ms_ngf16.pt --overwrite
	$(VPY) -m scripts.select_ms_model $(DEMO_MS_RUN)/eo2sar_demo_ms_ngf16.pt --report \
		--json $(DEMO_MS_RUN)/report.json
	@echo "best checkpoint exported to $(DEMO_MS_RUN)/eo2sar_demo_ms_ngf16.pt"

# The RGB demo model (checkpoints/eo2sar_demo_ngf16.pt, for app.py and 3-band rasters):
demo-model-rgb: $(STAMP)
	PY=$(VPY) bash scripts/demo_s1_data.sh
	OMP_NUM_THREADS=1 $(VPY) -m ugatit train --config $(TRAIN_CONFIG) \
		--dataset data/demo_s1/dataset --out $(DEMO_RUN) --ngf 16 --n-res 4 --img-size 96 \
		--device cpu --save-every 250 --sample-every 500 --keep 0 --workers 1 --seed 0 \
		$(DEMO_TRAIN_ARGS)
	OMP_NUM_THREADS=1 $(VPY) -m scripts.select_demo_model $(DEMO_RUN)/checkpoints \
		--json $(DEMO_RUN)/selection.json
	$(VPY) -m ugatit export $$($(VPY) -c "import json; print(json.load(open('$(DEMO_RUN)/selection.json'))['best']['path'])") \
		$(DEMO_RUN)/eo2sar_demo_ngf16.pt --overwrite
	OMP_NUM_THREADS=1 $(VPY) -m pipeline evaluate-pairs --model $(DEMO_RUN)/eo2sar_demo_ngf16.pt \
		--pair $(BEN_PAIRS)/S2A_MSIL2A_20170617T113321_36_85 \
		       $(BEN_PAIRS)/S1A_IW_GRDH_1SDV_20170617T064724_29UPU_36_85 \
		--pair $(BEN_PAIRS)/S2A_MSIL2A_20170617T113321_4_55 \
		       $(BEN_PAIRS)/S1A_IW_GRDH_1SDV_20170617T064724_29UPU_4_55 \
		--json $(DEMO_RUN)/evaluation_report_pairs.json
	@echo "best checkpoint exported to $(DEMO_RUN)/eo2sar_demo_ngf16.pt"

bench: $(STAMP)
	$(VPY) -m benchmarks.run

clean:
	rm -rf demo_out bench_out build dist .pytest_cache .ruff_cache *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
