"""Logging: levels, the `HH:MM:SS.mmm LEVL module: message` line, stdout / file / disabled,
and reopening the file in-process (the real SIGHUP test is in test_log_sighup.py)."""
import io
import logging
import os
import re
import stat

import pytest

from katzenpost import config, log

LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (ERRO|WARN|NOTI|INFO|DEBU|CRIT) (.+?): (.*)$")


@pytest.fixture(autouse=True)
def clean_logging():
    yield
    log.reset_logging()
    logging.getLogger().setLevel(logging.WARNING)


def capture(level="NOTICE") -> io.StringIO:
    stream = io.StringIO()
    log.setup_logging(level=level, stream=stream)
    return stream


def parsed(stream: io.StringIO) -> list[tuple[str, str, str]]:
    lines = stream.getvalue().splitlines()
    result = []
    for line in lines:
        match = LINE.match(line)
        assert match, line
        result.append(match.groups())
    return result


def test_notice_level_is_registered_between_info_and_warning():
    assert logging.INFO < log.NOTICE == 25 < logging.WARNING
    assert logging.getLevelName(25) == "NOTICE"
    assert list(log.LEVELS) == ["ERROR", "WARNING", "NOTICE", "INFO", "DEBUG"]


def test_line_format_and_four_letter_level_names():
    stream = capture("DEBUG")
    logger = logging.getLogger("katzenpost.server")
    logger.error("e %d", 1)
    logger.warning("w")
    log.notice(logger, "n %s", "x")
    logger.info("i")
    logger.debug("d")
    logger.critical("c")
    assert parsed(stream) == [("ERRO", "server", "e 1"), ("WARN", "server", "w"),
                              ("NOTI", "server", "n x"),
                              ("INFO", "server", "i"), ("DEBU", "server", "d"), ("CRIT", "server", "c")]


def test_module_is_the_last_component_of_the_logger_name():
    stream = capture()
    log.notice(logging.getLogger("katzenpost.pki"), "a")
    log.notice(logging.getLogger("katzenpost.server.listener:0"), "b")
    log.notice(logging.getLogger("katzenpost.kaetzchen/loop"), "c")
    assert [m for _, m, _ in parsed(stream)] == ["pki", "listener:0", "kaetzchen/loop"]


@pytest.mark.parametrize("level, shown", [
    ("ERROR", ["ERRO"]),
    ("WARNING", ["ERRO", "WARN"]),
    ("notice", ["ERRO", "WARN", "NOTI"]),
    ("INFO", ["ERRO", "WARN", "NOTI", "INFO"]),
    ("DEBUG", ["ERRO", "WARN", "NOTI", "INFO", "DEBU"]),
])
def test_level_filters_lower_levels(level, shown):
    stream = capture(level)
    logger = logging.getLogger("katzenpost.test")
    logger.error("x")
    logger.warning("x")
    log.notice(logger, "x")
    logger.info("x")
    logger.debug("x")
    assert [lvl for lvl, _, _ in parsed(stream)] == shown


def test_exceptions_are_appended_after_the_line():
    stream = capture()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("katzenpost.server").exception("failed")
    text = stream.getvalue()
    assert LINE.match(text.splitlines()[0]) and "RuntimeError: boom" in text


def test_disable_writes_nothing(tmp_path, capsys):
    log.setup_logging(level="DEBUG", disable=True)
    logging.getLogger("katzenpost.server").error("hidden")
    assert capsys.readouterr().out == ""


def test_stdout_is_the_default(capsys):
    log.setup_logging(level="NOTICE")
    log.notice(logging.getLogger("katzenpost.server"), "to stdout")
    assert capsys.readouterr().out.endswith("NOTI server: to stdout\n")


def test_log_file_is_appended_and_0600(tmp_path):
    path = tmp_path / "node.log"
    path.write_text("old line\n")
    path.chmod(0o600)
    log.setup_logging(file_path=str(path))
    log.notice(logging.getLogger("katzenpost.server"), "new line")
    log.reset_logging()
    lines = path.read_text().splitlines()
    assert lines[0] == "old line" and lines[1].endswith("NOTI server: new line")
    fresh = tmp_path / "fresh.log"
    log.setup_logging(file_path=str(fresh))
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o600


def test_setup_from_config_puts_a_relative_file_under_data_dir(tmp_path):
    text = f"""
[Server]
Identifier = "mix1"
Addresses = ["127.0.0.1:1"]
DataDir = "{tmp_path}"
[PKI.Nonvoting]
Address = "127.0.0.1:2"
PublicKey = "ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ="
[Logging]
File = "node.log"
Level = "info"
"""
    log.setup_from_config(config.load_text(text))
    logging.getLogger("katzenpost.pki").info("fetched")
    assert (tmp_path / "node.log").read_text().endswith("INFO pki: fetched\n")


def test_reopen_after_rename_writes_to_the_new_file(tmp_path):
    path = tmp_path / "node.log"
    log.setup_logging(file_path=str(path))
    logger = logging.getLogger("katzenpost.server")
    log.notice(logger, "before")
    os.rename(path, tmp_path / "node.log.1")
    assert log.reopen_log_file() is True
    log.notice(logger, "after")
    assert "before" in (tmp_path / "node.log.1").read_text()
    assert "after" not in (tmp_path / "node.log.1").read_text()
    assert path.read_text().endswith("NOTI server: after\n")


def test_reopen_without_a_file_is_a_no_op_and_a_failure_raises(tmp_path):
    capture()
    assert log.reopen_log_file() is False
    directory = tmp_path / "logs"
    directory.mkdir()
    log.setup_logging(file_path=str(directory / "node.log"))
    os.unlink(directory / "node.log")
    directory.rmdir()
    with pytest.raises(OSError):
        log.reopen_log_file()


def test_unknown_level_name_is_refused():
    with pytest.raises(KeyError):
        log.setup_logging(level="LOUD")


def test_notice_records_name_the_real_caller(caplog):
    with caplog.at_level(logging.DEBUG):
        log.notice(logging.getLogger("katzenpost.test"), "from %s", "here")
    (record,) = [r for r in caplog.records if r.name == "katzenpost.test"]
    assert (record.levelname, record.getMessage()) == ("NOTICE", "from here")
    assert record.pathname == __file__ and record.funcName == "test_notice_records_name_the_real_caller"
