"""pipeline.errors: one root, exit codes, and the device error shared with ugatit."""

from __future__ import annotations

import pickle

import ugatit
from pipeline.errors import DeviceError, PipelineError


def test_device_error_is_both_packages_and_a_usage_error():
    err = DeviceError.from_ugatit(ugatit.DeviceError("unknown device 'x'", hint="use cpu"))
    assert isinstance(err, PipelineError) and isinstance(err, ugatit.DeviceError)
    assert err.exit_code == 2
    assert err.format() == "--device: unknown device 'x'. Hint: use cpu"
    again = pickle.loads(pickle.dumps(err))  # crosses Dask process boundaries
    assert (type(again), again.path, again.hint) == (DeviceError, "--device", "use cpu")
