"""Timer's refusals of a bad ``duration``/``interval`` and its ``max_time`` note, under real Lightning and ember:
the same exception types (a program's ``except`` catches both) and messages that begin as Lightning's."""

from __future__ import annotations

import logging

import pytest

import ember
import ember.utilities.exceptions
from parity import pl


def misconfiguration(lib) -> type[Exception]:
    return lib.utilities.exceptions.MisconfigurationException


@pytest.mark.parametrize("lib", [pl, ember], ids=lambda lib: lib.__name__)
@pytest.mark.parametrize("given", ["1:00:00", "00:1:00:00", "1 hour", "00:01:00:00:00"])
def test_timer_malformed_duration_string_raises_lightnings_exception_and_text(lib, given):
    expected = rf"`Timer\(duration='{given}'\)` is not a valid duration. Expected a string in the format DD:HH:MM:SS"
    with pytest.raises(misconfiguration(lib), match=expected):
        lib.callbacks.Timer(duration=given)


@pytest.mark.parametrize("lib", [pl, ember], ids=lambda lib: lib.__name__)
@pytest.mark.parametrize("given", [{"hour": 1}, {"hours": "1"}])
def test_timer_duration_dict_not_of_timedelta_keywords_raises_a_type_error(lib, given):
    with pytest.raises(TypeError) as info:
        lib.callbacks.Timer(duration=given)
    if lib is ember:  # and says what the dict must hold
        assert "`Timer(duration=" in str(info.value) and "{'hours': 12}" in str(info.value)


def test_timer_duration_of_another_type_says_what_to_pass():
    with pytest.raises(AttributeError, match="'int' object has no attribute 'total_seconds'"):
        pl.callbacks.Timer(duration=60)  # Lightning fails by accident; ember says what to pass, as a TypeError
    with pytest.raises(TypeError, match=r"`Timer\(duration=60\)` is not a valid duration: received type int\. "
                                        r"Expected a string in the format DD:HH:MM:SS.*pass \{'seconds': 60\}"):
        ember.callbacks.Timer(duration=60)
    with pytest.raises(misconfiguration(ember), match=r"\(Given as `Trainer\(max_time=60\)`\.\)"):
        ember.Trainer(max_time=60, logger=False)


@pytest.mark.parametrize("lib", [pl, ember], ids=lambda lib: lib.__name__)
def test_timer_bad_interval_raises_lightnings_text(lib):
    with pytest.raises(misconfiguration(lib), match=r"Unsupported parameter value `Timer\(interval=hourly\)`"):
        lib.callbacks.Timer(duration="00:01:00:00", interval="hourly")


def test_max_time_with_a_timer_among_the_callbacks_notes_it_is_ignored(tmp_path, caplog):
    logger = logging.getLogger("pytorch_lightning")
    propagate, logger.propagate = logger.propagate, True  # as Lightning's own tests have it
    try:
        found = []
        for lib in (pl, ember):
            caplog.clear()
            lib.Trainer(max_time="00:00:01:00", callbacks=[lib.callbacks.Timer()], logger=False,
                        default_root_dir=str(tmp_path))
            found.append([r.getMessage() for r in caplog.records if "max_time" in r.getMessage()])
    finally:
        logger.propagate = propagate
    assert found[0] == ["Ignoring `Trainer(max_time=...)`, callbacks list already contains a Timer."]
    assert found[1] == found[0]
