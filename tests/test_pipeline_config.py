"""The pipeline's bounds come from the node config's [Debug] section (batch size and
window, zmq high-water marks, in-flight packets, per-hop queues, scheduler placement)."""
from pathlib import Path

import pytest

from katzenpost import config
from katzenpost.server.pipeline import PipelineSettings

MIX = (Path(__file__).parent / "configs" / "minimal_mix.toml").read_text()


def load_with_debug(lines):
    return config.load_text(MIX + "\n[Debug]\n" + "\n".join(lines) + "\n")


def test_pipeline_settings_default_from_a_config_without_debug_knobs():
    settings = PipelineSettings.from_config(config.load_text(MIX).debug)
    assert settings == PipelineSettings(NumSphinxWorkers=settings.NumSphinxWorkers).normalized()
    assert settings.SchedulerInline is True and settings.SchedulerQueueSize == 0


def test_pipeline_bounds_and_scheduler_placement_are_read_from_debug():
    cfg = load_with_debug(["SphinxBatchSize = 8", "SphinxBatchWindowUs = 250", "SphinxQueueHWM = 5",
                           "SphinxQueuePackets = 40", "SchedulerInputHWM = 6", "DispatchHWM = 7",
                           "LocalHWM = 9", "OutgoingQueueSize = 11", "DispatchBatchSize = 12",
                           "SchedulerQueueSize = 1000", "SchedulerThread = true", "NumSphinxWorkers = 3"])
    s = PipelineSettings.from_config(cfg.debug)
    assert (s.SphinxBatchSize, s.SphinxBatchWindowUs, s.SphinxQueueHWM, s.SphinxQueuePackets) == (8, 250, 5, 40)
    assert (s.SchedulerInputHWM, s.DispatchHWM, s.LocalHWM) == (6, 7, 9)
    assert (s.OutgoingQueueSize, s.DispatchBatchSize, s.SchedulerQueueSize) == (11, 12, 1000)
    assert s.SchedulerInline is False and s.NumSphinxWorkers == 3


@pytest.mark.parametrize("line, field", [("SphinxQueueHWM = 2000000", "Debug.SphinxQueueHWM"),
                                         ("SphinxBatchWindowUs = 5000000", "Debug.SphinxBatchWindowUs"),
                                         ("SchedulerThread = 1", "Debug.SchedulerThread")])
def test_out_of_range_or_mistyped_pipeline_knob_is_a_config_error(line, field):
    with pytest.raises(config.ConfigError) as info:
        load_with_debug([line])
    assert any(field in problem for problem in info.value.problems), info.value.problems


def test_the_pipeline_defaults_come_from_the_config_knobs_alone():
    """One source of truth: change a knob's default in config and the pipeline follows."""
    import subprocess
    import sys
    code = (
        "import dataclasses\n"
        "from katzenpost import config\n"
        "for name, knob in list(config.DEBUG_INT_KNOBS.items()):\n"
        "    config.DEBUG_INT_KNOBS[name] = dataclasses.replace(knob, default=knob.default + 7,\n"
        "                                                       maximum=knob.maximum + 7)\n"
        "from katzenpost.server.pipeline import PipelineSettings\n"
        "s = PipelineSettings()\n"
        "print(s.SphinxBatchSize, s.SchedulerMaxBurst, s.UnwrapDelay, s.OutgoingQueueSize,"
        " s.DispatchBatchSize, s.SendSlack)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         check=True).stdout.split()
    knobs = __import__("katzenpost.config", fromlist=["x"]).DEBUG_INT_KNOBS
    assert [int(v) for v in out] == [knobs[n].default + 7 for n in (
        "SphinxBatchSize", "SchedulerMaxBurst", "UnwrapDelay", "OutgoingQueueSize",
        "DispatchBatchSize", "SendSlack")]
