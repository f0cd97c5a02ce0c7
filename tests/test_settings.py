"""The venue configuration as a user writes it: TOML files on disk, environment variables."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import msgspec
import pytest

from icetime import logs, settings
from icetime.settings import ConfigError
from services.ingest.decoders.link import LINKS

from .conftest import ROOT

DOCS = (ROOT / "docs" / "configuration.md").read_text()
ENV = ("ICETIME_CONFIG", "REDIS_URL", "ICETIME_DATA", "ICETIME_LOG")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, text: str, name: str = "venue.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


SOURCES = '[[sources]]\nid = "gun"\ntoken = "t1"\n[[sources]]\nid = "officials"\ntoken = "t2"\n'

BAD = {
    "[broadcast]\nhtp_port = 80\n": "unknown key 'broadcast.htp_port'",
    'hots = "0.0.0.0"\n': "unknown key 'hots'",
    "[broadcst]\nhttp_port = 80\n": "unknown key 'broadcst'",
    '[[decoders]]\nid = "d"\nhost = "h"\nprotocol = "p4"\n':
        "decoders[0].protocol: 'p4' is not allowed "
        "(allowed: p3, amb_ascii, protime, protime_udp)",
    '[[decoders]]\nid = "d"\nhost = "h"\nprt = 5403\n': "unknown key 'decoders[0].prt'",
    '[[decoders]]\nid = "d"\nhost = "h"\nport = 0\n':
        "decoders[0].port: expected an integer >= 1, got 0",
    '[[decoders]]\nid = "d"\nhost = "h"\ngun_transponders = [9992]\n':
        "decoders[0].gun_transponders[0]: expected a string, got an integer",
    "[ingest]\nhttp_port = 70000\n": "ingest.http_port: expected an integer <= 65535, got 70000",
    "[ingest]\ntcp_port = -1\n": "ingest.tcp_port: expected an integer >= 0, got -1",
    '[ingest]\nhttp_port = "80"\n': "ingest.http_port: expected an integer, got a string",
    '[redis]\nappendfsync = "sometimes"\n':
        "redis.appendfsync: 'sometimes' is not allowed (allowed: always, everysec, no)",
    '[redis]\nurl = "http://redis:6379"\n':
        "redis.url: 'http://redis:6379' is not a Redis URL (starts with redis://, rediss://, "
        "unix://, redis+cluster://, rediss+cluster://)",
    '[competition]\nid = "a{b}"\n':
        "competition.id: 'a{b}' is not a competition id (1..64 letters, digits, '_', '.', "
        "'-', starting with a letter or digit)",
    "[scoring]\nmax_speed_mps = -3\n": "scoring.max_speed_mps: expected a number > 0.0, got -3",
    "[scoring]\nloops = { p100 = 500 }\n":
        "scoring.loops.p100: 500 is not 1..399 metres past the finish line",
    "[scoring]\nloops = { finish = 100 }\n":
        "scoring.loops.finish: the finish line is not an extra loop",
    '[scoring]\ncompetitions = "all"\n':
        "scoring.competitions: 'all' is not \"*\" (any competition in the registry); leave "
        "the key out to score competition.id only",
    '[scoring]\ncompetitions = ["a", "b"]\n':
        "scoring.competitions: expected a string, got a list",
    "[broadcast]\nclient_queue_max = 0\n":
        "broadcast.client_queue_max: expected an integer >= 1, got 0",
    '[broadcast]\npublic_ws_url = "http://x/ws"\n':
        "broadcast.public_ws_url: 'http://x/ws' is not a WebSocket URL (starts with ws:// or "
        "wss://) or a path on the pages' host (/ws)",
    '[broadcast]\npublic_ws_url = "//x/ws"\n':
        "broadcast.public_ws_url: '//x/ws' is not a WebSocket URL (starts with ws:// or "
        "wss://) or a path on the pages' host (/ws)",
    "[ingest]\nhttp_port = 9000\n[broadcast]\nhttp_port = 9000\n":
        "broadcast.http_port: 9000 is also ingest.http_port; each listener needs its own port",
    "broadcast = 3\n": "broadcast: expected a table, got an integer",
    '[[sources]]\nid = "gun"\n': "missing key 'sources[0].token'",
    '[[sources]]\nid = ""\ntoken = "t"\n': "sources[0].id: must not be empty",
    '[[sources]]\nid = "a"\ntoken = "x"\n[[sources]]\nid = "a"\ntoken = "y"\n':
        "sources[1].id: 'a' is already sources[0].id",
    '[[sources]]\nid = "a"\ntoken = "x"\n[[sources]]\nid = "b"\ntoken = "x"\n':
        "sources[1].token: the same token as sources[0]; a token must tell its source apart",
    '[[decoders]]\nid = "d"\nhost = "h"\n[[decoders]]\nid = "d"\nhost = "i"\n':
        "decoders[1].id: 'd' is already decoders[0].id",
    SOURCES + '[[decoders]]\nid = "gun"\nhost = "h"\n':
        "decoders[0].id: 'gun' is also a [[sources]] id; a decoder's passings carry its id as "
        "their source, so it must be its own",
    SOURCES + '[competition]\nloader = "nobody"\n':
        "competition.loader: no [[sources]] entry has id 'nobody'",
    '[competition]\nstartlists = ["sl.json"]\n':
        "competition.startlists: loading them needs a [[sources]] entry whose role is "
        "loader or admin",
}


@pytest.mark.parametrize("text", list(BAD))
def test_a_mistake_is_one_line_naming_the_file_and_the_key(tmp_path, text):
    path = write(tmp_path, text)
    (tmp_path / "sl.json").write_text("{}")
    with pytest.raises(ConfigError) as err:
        settings.load(path)
    assert str(err.value) == f"{path}: {BAD[text]}"


def test_missing_and_unreadable_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"^nowhere\.toml: no such file$"):
        settings.load("nowhere.toml")
    with pytest.raises(ConfigError, match="is a folder"):
        settings.load(tmp_path)
    bad = write(tmp_path, "[ingest\n")
    with pytest.raises(ConfigError, match=r"venue\.toml: not valid TOML: .*\(at line 1"):
        settings.load(bad)
    sl = write(tmp_path, '[competition]\nstartlists = ["gone.json"]\n' + SOURCES)
    with pytest.raises(ConfigError, match=re.escape(
            f"competition.startlists[0]: no such file {tmp_path / 'gone.json'}")):
        settings.load(sl)
    rules = write(tmp_path, '[rules]\nfile = "rules.toml"\n')
    with pytest.raises(ConfigError, match=re.escape(
            f"rules.file: no such file {tmp_path / 'rules.toml'}")):
        settings.load(rules)
    (tmp_path / "rules.toml").write_text("[lap\n")
    with pytest.raises(ConfigError, match="rules.file: .* is not valid TOML"):
        settings.load(rules)


def test_the_shipped_configurations_load(monkeypatch):
    monkeypatch.chdir("/")
    venue = settings.load(ROOT / "deploy" / "venue.example.toml")
    assert venue.data_dir == str(ROOT / ".icetime" / "venue")
    assert venue.startlists == (str(ROOT / "fixtures" / "beijing2023_w1000a.json"),)
    assert venue.loader() == venue.source("loader")
    assert {s.id: s.role for s in venue.sources} == {
        "gun": "gun", "finish-loop": "decoder", "photo-finish": "photo",
        "officials": "referee", "loader": "loader"}
    assert venue.config_file == str(ROOT / "deploy" / "venue.example.toml")
    demo = settings.load(ROOT / "deploy" / "demo.toml")
    assert [d.id for d in demo.decoders] == ["finish-p3"]
    assert demo.decoders[0].protocol == "p3" and demo.decoders[0].port == 5403


def test_relative_paths_are_relative_to_the_file_not_the_working_folder(tmp_path, monkeypatch):
    venue = tmp_path / "venue"
    write(venue, "{}")
    write(venue, "", "rules.toml")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "w500.json").write_text("{}")
    write(venue, '[redis]\ndata_dir = "../data"\n[rules]\nfile = "rules.toml"\n'
          '[competition]\nstartlists = ["../lists/w500.json"]\n' + SOURCES)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = settings.load("../venue/venue.toml")
    assert cfg.data_dir == str(tmp_path / "data")
    assert cfg.rules_file == str(venue / "rules.toml")
    assert cfg.startlists == (str(tmp_path / "lists" / "w500.json"),)
    assert cfg.config_file == str(venue / "venue.toml")
    assert cfg.loader() == cfg.source("officials")  # the default loader


def test_defaults_and_port_zero(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = settings.load()  # no file at all: the documented defaults
    assert (cfg.host, cfg.ingest_http_port, cfg.ingest_tcp_port, cfg.broadcast_http_port,
            cfg.broadcast_ws_port) == ("127.0.0.1", 8090, 5410, 8080, 8081)
    assert cfg.data_dir == str(tmp_path / ".icetime" / "data")
    assert (cfg.aof_fsync, cfg.max_speed_mps, cfg.client_queue_max, cfg.client_buffer_max) == (
        "everysec", 20.0, 512, 262144)
    path = write(tmp_path, "[ingest]\nhttp_port = 0\ntcp_port = 0\n"
                           "[broadcast]\nhttp_port = 0\nws_port = 0\n"
                           "[scoring]\nmax_speed_mps = 18\nloops = { p200 = 200 }\n")
    cfg = settings.load(path)  # port 0: each listener asks the system for a free port
    assert (cfg.ingest_http_port, cfg.broadcast_ws_port) == (0, 0)
    assert cfg.max_speed_mps == 18.0 and cfg.loops == {"p200": 200}
    assert not cfg.scoring_any_competition  # the worker scores competition.id only
    cfg = settings.load(write(tmp_path, '[scoring]\ncompetitions = "*"\n'))
    assert cfg.scoring_any_competition


def test_the_environment(tmp_path, monkeypatch):
    path = write(tmp_path, '[redis]\nurl = "redis://file:6379/0"\ndata_dir = "d"\n[ingest]\n'
                           "http_port = 9100\n")
    other = write(tmp_path / "other", "[ingest]\nhttp_port = 9200\n")
    monkeypatch.chdir(tmp_path / "other")
    monkeypatch.setenv("ICETIME_CONFIG", str(path))
    cfg = settings.load()
    assert cfg.ingest_http_port == 9100 and cfg.config_file == str(path)
    assert cfg.redis_url == "redis://file:6379/0" and cfg.data_dir == str(tmp_path / "d")
    assert settings.load(other).ingest_http_port == 9200  # a path given wins
    monkeypatch.setenv("REDIS_URL", "unix:///run/redis.sock")
    monkeypatch.setenv("ICETIME_DATA", "here")
    cfg = settings.load()
    assert cfg.redis_url == "unix:///run/redis.sock"
    assert cfg.data_dir == str(tmp_path / "other" / "here")  # relative to the working folder
    monkeypatch.setenv("REDIS_URL", "localhost:6379")
    with pytest.raises(ConfigError, match=r"^REDIS_URL: 'localhost:6379' is not a Redis URL"):
        settings.load()
    monkeypatch.setenv("ICETIME_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match="gone.toml: no such file"):
        settings.load()


def test_every_protocol_has_a_link_and_every_key_is_documented():
    assert set(settings.PROTOCOLS) == set(LINKS)
    sections = {f.name: f.type for f in msgspec.inspect.type_info(settings._VenueFile).fields}
    keys = []
    for name, info in sections.items():
        if isinstance(info, msgspec.inspect.StructType):
            keys += [f"{name}.{f.name}" for f in info.fields]
        elif isinstance(info, msgspec.inspect.VarTupleType):
            keys += [f"{name}[].{f.name}" for f in info.item_type.fields]
        else:
            keys.append(name)
    undocumented = [k for k in keys if f"`{k}`" not in DOCS]
    assert not undocumented
    for name in ENV:
        assert f"`{name}`" in DOCS


def test_icetime_log_names_a_level(monkeypatch, capsys):
    monkeypatch.setenv("ICETIME_LOG", "verbose")
    with pytest.raises(ConfigError, match=r"^ICETIME_LOG: 'verbose' is not a log level"):
        logs.level_from_env()
    monkeypatch.setenv("ICETIME_LOG", "debug")
    assert logs.level_from_env() == "DEBUG"
    root = logging.getLogger()
    saved = root.level, root.handlers[:]
    try:
        logs.configure("ingest", "INFO")
        log = logging.getLogger("services.ingest.server")
        log.debug("source gun connected")  # connections are debug: not shown at INFO
        log.warning("rejected input", extra=logs.about(
            {"source": "gun", "seq": 7, "race": "w500"}))
        logging.getLogger("websockets.server").info("connection open")
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    assert re.fullmatch(r"\S+ \S+ ingest    WARNING services\.ingest\.server: rejected input "
                        r"\[race=w500 input=gun#7\]", err[0]), err


def test_roles_name_what_a_token_may_send(tmp_path):
    """A role outside the list is named with the allowed ones; the start lists' loader
    must have a role that may load them; no role means admin (older configurations)."""
    bad = write(tmp_path, '[[sources]]\nid = "g"\ntoken = "x"\nrole = "starter"\n')
    with pytest.raises(ConfigError, match=re.escape(
            "sources[0].role: 'starter' is not allowed (allowed: decoder, gun, photo, "
            "referee, loader, admin)")):
        settings.load(bad)
    referee = write(tmp_path, '[competition]\nloader = "r"\n'
                    '[[sources]]\nid = "r"\ntoken = "x"\nrole = "referee"\n')
    with pytest.raises(ConfigError, match="competition.loader: source 'r' has role "
                       "'referee', which may not load start lists"):
        settings.load(referee)
    old = settings.load(write(tmp_path, '[[sources]]\nid = "o"\ntoken = "x"\n'))
    assert old.sources[0].effective_role == "admin" and old.loader() == old.sources[0]
    assert old.sources[0].may_send("decision") and old.sources[0].may_send("passing")
    gun = settings.Source("g", "y", role="gun")
    assert gun.may_send("gun") and gun.may_send("call") and not gun.may_send("decision")
