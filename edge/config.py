"""Settings: one TOML file, every key overridable by EDGE_… environment variables.

``load_settings`` is the only entry point. It returns validated settings or
raises ``ConfigError`` with one line per problem (key path, bad value, what was
expected), which the CLI prints before exiting 78 (EX_CONFIG).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from edge.commands.settings import CommandsSettings
from edge.config_files import InputFile, SecretFile, missing_inputs
from edge.errors import ConfigError, UnknownDriverKind
from edge.limits import MQTT_PACKET_MAX, SESSION_EXPIRY_MAX_S, non_finite
from edge.localapi.settings import LocalApiSettings
from edge.schema import NAME
from edge.update.settings import RemoteConfigSettings, UpdateSettings

DEFAULT_CONFIG_PATH = Path("/etc/edge/edge.toml")
EX_CONFIG = 78


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Least severe log lines written.")
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: JSON lines unless stdout is a terminal."
    )


class StoreSettings(_Section):
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=64 * 1024, le=2**40,
                           description="Size cap of stored events (the disk's free space caps it too).")
    reserve_bytes: int = Field(default=1024 * 1024, ge=0, le=2**30,
                               description="Disk space kept free for alarms when the disk fills up.")
    retention_hours: float = Field(default=72.0, ge=0, le=24 * 3650, description="How long acked events stay for tail/audit.")
    retention_bytes: int = Field(default=64 * 1024 * 1024, ge=0, le=2**40, description="Acked events kept at most.")
    batch_max: int = Field(default=2000, ge=1, le=100_000, description="Events per group commit at most.")
    maintenance_interval_s: float = Field(default=60.0, gt=0, le=86400,
                                          description="How often acks are folded in, retention applies "
                                                      "and freed pages go back to the disk.")


class MqttSettings(_Section):
    brokers: list[str] = Field(default_factory=list, description="Tried in turn: mqtt://host:port, mqtts://host:port.")
    protocol: Literal["5", "3.1.1"] = Field(default="5", description="MQTT version; 5 keeps a persistent "
                                                                   "session with an expiry.")
    client_id: str | None = Field(default=None, description="Defaults to the device_id.")
    ca_file: InputFile | None = Field(default=None, description="CA certificates (PEM) the broker's "
                                      "certificate must chain to; default: the system's.")
    cert_file: InputFile | None = Field(default=None, description="This device's certificate (PEM) for "
                                        "mutual TLS: its identity at the broker. Set with key_file.")
    key_file: SecretFile | None = Field(default=None, description="The private key of cert_file (PEM); "
                                        "refused when others may read it (0600 or 0640).")
    tls_verify_hostname: bool = Field(
        default=True, description="The broker's certificate must name the host of its URI. DANGEROUS "
                                  "when false: any server certificate the CA signed can then stand in "
                                  "for the broker.")
    username: str | None = Field(default=None, description="User name at the broker, for password "
                                                           "login (with password_file).")
    password_file: SecretFile | None = Field(default=None, description="Password is read from this file, never "
                                             "from TOML; refused when others may read it (0600 or 0640).")
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keepalive: the broker "
                             "drops a connection silent for 1.5 times this.")
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0, le=SESSION_EXPIRY_MAX_S,
                                  description="MQTT 5 session expiry: a 32-bit number of seconds.")
    batch_max_events: int = Field(default=500, ge=1, le=100_000, description="Events per published batch at most.")
    batch_max_bytes: int = Field(default=256 * 1024, ge=1024, le=MQTT_PACKET_MAX,
                                 description="Lowered to the broker's maximum packet size when it announces one.")
    inflight: int = Field(default=32, ge=1, le=65535, description="Messages (batches) waiting for their "
                                                                "PUBACK at most.")
    backoff_min_s: float = Field(default=0.5, gt=0, le=3600, description="First wait before reconnecting "
                                 "after a refusal; it doubles with each refusal up to backoff_max_s.")
    backoff_max_s: float = Field(default=60.0, gt=0, le=3600,
                                 description="After refusals; an unreachable broker is retried within 10 s.")

    @field_validator("brokers", mode="after")
    @classmethod
    def _uris(cls, brokers: list[str]) -> list[str]:
        for i, uri in enumerate(brokers):
            if (problem := _broker_uri_problem(uri)) is not None:
                raise PydanticCustomError("broker_uri", "{problem}; expected mqtt://host:port or mqtts://host:port",
                                          {"index": i, "uri": uri, "problem": problem})
        return brokers


def _broker_uri_problem(uri: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        return f"not a URI ({exc})"
    if parts.scheme not in ("mqtt", "mqtts"):
        return f"scheme {parts.scheme or 'missing'!r} is not mqtt or mqtts"
    if not parts.hostname:
        return "no host name"
    if port == 0:
        return "port 0 is not a broker port"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "a broker URI has no path, query or fragment"
    return None


class TrustSettings(_Section):
    """Central's signing keys: commands, galleries, catalogs and contact lists must verify."""

    central_keys: list[InputFile] = Field(default_factory=list, description="PEM Ed25519 public keys of central.")
    clock_skew_s: float = Field(default=120.0, ge=0, le=86400, description="Allowance for issued_at in the future.")


class SupervisorSettings(_Section):
    backoff_initial_s: float = Field(default=1.0, gt=0, le=3600, description="A crashed driver is "
                                     "restarted after up to this; the wait doubles with each crash in a row.")
    backoff_max_s: float = Field(default=60.0, gt=0, le=3600, description="Longest wait before restarting "
                                                                        "a driver that keeps crashing.")
    stop_timeout_s: float = Field(default=5.0, gt=0, le=600, description="Wait this long for a driver to stop.")


class DriverEntry(BaseModel):
    """One [[drivers]] table: name and kind here; the rest is the driver's own options."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=NAME, description="Unique on the device: commands, event sources and "
                                                 "gate lanes name the driver by it.")
    kind: str = Field(description="The driver kind (see Driver options; `edge drivers list`).")

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class CoreSettings(BaseSettings):
    """The core's part of a device's configuration; ``Settings`` adds the services' sections."""

    model_config = SettingsConfigDict(env_prefix="EDGE_", env_nested_delimiter="__", extra="forbid")

    device_id: str = Field(pattern=NAME, description="This device's id, in its MQTT topics "
                                                      "(`edge/v1/<site>/<device_id>/...`) and every event.")
    site: str = Field(pattern=NAME, description="The site (prison) the device belongs to, in its MQTT topics.")
    role: Literal["gate", "tablet"] = Field(description="gate: the gate policy over its drivers; tablet: "
                                                        "the learning and messaging caches and the UI's API.")
    state_dir: Path = Field(default=Path("/var/lib/edge"), description="The event store, keys, caches and "
                                                                       "sockets; the daemon must be able to write it.")
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    supervisor: SupervisorSettings = Field(default_factory=SupervisorSettings)
    trust: TrustSettings = Field(default_factory=TrustSettings)
    localapi: LocalApiSettings = Field(default_factory=LocalApiSettings)
    commands: CommandsSettings = Field(default_factory=CommandsSettings)
    update: UpdateSettings = Field(default_factory=UpdateSettings)
    remote_config: RemoteConfigSettings = Field(default_factory=RemoteConfigSettings)
    drivers: list[DriverEntry] = Field(default_factory=list)

    @field_validator("device_id")
    @classmethod
    def _not_a_site_topic(cls, device_id: str) -> str:
        from edge.mqtt.topics import SITE_LEVEL_NAMES

        if device_id in SITE_LEVEL_NAMES:
            raise ValueError(f"{device_id!r} collides with the site-level topic edge/v1/<site>/{device_id}; "
                             f"a device id must not be one of {', '.join(sorted(SITE_LEVEL_NAMES))}")
        return device_id

    @field_validator("drivers")
    @classmethod
    def _unique_names(cls, drivers: list[DriverEntry]) -> list[DriverEntry]:
        seen: dict[str, int] = {}
        for i, d in enumerate(drivers):
            if d.name in seen:
                # A custom type lets _error_lines point at drivers[i].name, not the whole list.
                raise PydanticCustomError(
                    "duplicate_driver_name",
                    "already used by drivers[{first}]; driver names must be unique",
                    {"index": i, "first": seen[d.name], "name": d.name})
            seen[d.name] = i
        return drivers

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs; environment variables override it.
        return (env_settings, init_settings)


def _service_sections() -> dict[str, Any]:
    """The sections services register under ``edge.settings`` (``gate = "pkg.settings:Model"``),
    after [[drivers]] so that their validators can check driver names."""
    from edge.registry import registered

    sections: dict[str, Any] = {}
    for ep in registered("edge.settings"):
        annotation = ep.load()
        model = get_args(annotation)[0] if get_origin(annotation) is Annotated else annotation
        sections[ep.name] = (annotation, Field(default_factory=model))
    return sections


#: The whole configuration of one device: the core's sections and every registered service's.
Settings = create_model("Settings", __base__=CoreSettings, __module__=__name__, **_service_sections())
Settings.__doc__ = "The whole configuration of one device."


def config_path(explicit: str | os.PathLike | None = None) -> Path:
    return Path(explicit or os.environ.get("EDGE_CONFIG") or DEFAULT_CONFIG_PATH)


def load_settings(path: str | os.PathLike | None = None, *, check_drivers: bool = True,
                  check_files: bool = True) -> Settings:
    """Read, merge with the environment and validate; raise ConfigError naming every problem.
    ``check_files``: every file and folder the config names must be there and readable."""
    path = config_path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found (pass --config PATH or set EDGE_CONFIG)"]) from None
    except PermissionError:
        raise ConfigError([f"{path}: permission denied reading the config file"]) from None
    except IsADirectoryError:  # `edge --config /etc/edge run`: systemd's path skips click's check
        raise ConfigError([f"{path}: is a folder; expected the TOML config file in it, "
                           "e.g. /etc/edge/edge.toml"]) from None
    except OSError as exc:  # a path under a file, an I/O error: still a config the daemon cannot use
        raise ConfigError([f"{path}: cannot read the config file: {exc.strerror or exc}"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    if (data.get("remote_config") or {}).get("enabled") is True:
        from edge.update.remote_config import overlay

        data = overlay(path, data)  # the signed remote document beside the file, checked again
    try:
        settings = Settings(**data)
    except SettingsError as exc:  # an EDGE_ variable pydantic-settings could not even parse
        raise ConfigError([f"{path}: {line}" for line in _unparsable_env(exc)]) from None
    except ValidationError as exc:
        lines = [_name_env_source(line) for line in _error_lines(exc)]
        if check_drivers:  # report the drivers' own options too, so one run shows everything
            lines += _driver_option_errors(_parsable_entries(data.get("drivers")))
        raise ConfigError([f"{path}: {line}" for line in lines]) from None
    lines = non_finite(settings.model_copy(update={"drivers": []}))
    lines += _driver_option_errors(list(enumerate(settings.drivers))) if check_drivers else []
    if check_files and not lines:
        lines = missing_inputs(settings) + (_driver_input_errors(settings) if check_drivers else [])
    if lines:
        raise ConfigError([f"{path}: {line}" for line in lines])
    return settings


# EDGE_ variables edge reads itself, not settings (the config's path, the A/B slot's boot).
_NOT_SETTINGS_ENV = frozenset({"EDGE_CONFIG", "EDGE_SLOT", "EDGE_INSTALL_ROOT"})


def ignored_env(environ: dict[str, str] | None = None) -> list[str]:
    """One line for each EDGE_ variable that names no top-level setting: pydantic-settings
    ignores it without a word (a wrong key inside a section, EDGE_MQTT__BROKER, is an error
    already), so a field engineer's EDGE_STORE_MAX_BYTES (one underscore) would seem set and
    change nothing. Names the closest real variable where there is one."""
    import difflib

    sections = {f"EDGE_{name.upper()}" for name in Settings.model_fields}
    lines = []
    for name in sorted(os.environ if environ is None else environ):
        upper = name.upper()
        if (not upper.startswith("EDGE_") or upper in _NOT_SETTINGS_ENV
                or upper.split("__", 1)[0] in sections):
            continue
        close = difflib.get_close_matches(upper, _settings_env_names(Settings), n=1, cutoff=0.8)
        lines.append(f"{name} is not a setting and is ignored" + (f"; did you mean {close[0]}?" if close else
                     " (docs/configuration.md lists every variable)"))
    return lines


def _settings_env_names(model: type[BaseModel], prefix: str = "EDGE_") -> list[str]:
    """EDGE_KEY, EDGE_SECTION__KEY, ... for every setting (the names a misspelling is matched to)."""
    names = []
    for field_name, info in model.model_fields.items():
        name = f"{prefix}{field_name.upper()}"
        names.append(name)
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            names += _settings_env_names(info.annotation, f"{name}__")
    return names


def _driver_input_errors(settings: Settings) -> list[str]:
    """Files and folders named in the drivers' own options (their options are valid here)."""
    lines: list[str] = []
    for i, entry in enumerate(settings.drivers):
        lines += missing_inputs(driver_config(entry), f"drivers[{i}] ({entry.name}).")
    return lines


def _unparsable_env(exc: Exception) -> list[str]:
    """Which EDGE_ variables hold a list or table value that is not JSON (pydantic-settings only
    names the top-level section), e.g. EDGE_MQTT__BROKERS=mqtts://host:8883."""
    import json
    import re

    match = re.search(r'field "([^"]+)"', str(exc))
    section = match.group(1) if match else ""
    lines = []
    for name, value in sorted(os.environ.items()):
        upper = name.upper()
        if not upper.startswith("EDGE_") or upper == "EDGE_CONFIG":
            continue
        key = upper[5:].lower().replace("__", ".")
        if key.split(".")[0] != section or not _takes_json(key):
            continue
        try:
            json.loads(value)
        except ValueError:
            lines.append(f"{key} (set by environment variable {name}): got {_short_repr(value)}; a list or "
                         'table in an environment variable must be JSON, e.g. ["mqtts://broker.example:8883"]')
    return lines or [f"{section}: {exc}"]


def _takes_json(key: str) -> bool:
    """Is the setting at dotted ``key`` a list, a table or a section (what the environment gives as JSON)?"""
    model: Any = Settings
    annotation: Any = None
    for part in key.split("."):
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return False
        annotation = fields[part].annotation
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        options = [a for a in get_args(annotation) if a is not type(None)] if get_origin(annotation) else []
        model = options[0] if len(options) == 1 and isinstance(options[0], type) else annotation
    origin = get_origin(annotation)
    return origin in (list, dict) or isinstance(model, type) and issubclass(model, BaseModel)


def _name_env_source(line: str) -> str:
    """Say so when the bad value came from an EDGE_ variable: it is not in the file."""
    for name in os.environ:
        upper = name.upper()
        if not upper.startswith("EDGE_") or upper == "EDGE_CONFIG":
            continue
        path = upper[5:].lower().replace("__", ".")
        if line.startswith(f"{path}:"):
            return f"{path} (set by environment variable {name}){line[len(path):]}"
    return line


def _parsable_entries(raw: Any) -> list[tuple[int, DriverEntry]]:
    """The [[drivers]] tables that are well-formed enough to check their options."""
    if not isinstance(raw, list):
        return []
    entries = []
    for i, item in enumerate(raw):
        try:
            entries.append((i, DriverEntry.model_validate(item)))
        except ValidationError:
            continue  # its name/kind problem is already reported by the Settings validation
    return entries


def driver_config(entry: DriverEntry):
    """Validate one driver entry against its driver's own model; returns the model."""
    from edge.registry import driver_class

    cls = driver_class(entry.kind)
    return cls.Config.model_validate({"name": entry.name, "kind": entry.kind, **entry.options()})


def _driver_option_errors(entries: list[tuple[int, DriverEntry]]) -> list[str]:
    lines: list[str] = []
    for i, entry in entries:
        where = f"drivers[{i}] ({entry.name})"
        try:
            lines.extend(f"{where}.{line}" for line in non_finite(driver_config(entry)))
        except UnknownDriverKind as exc:
            lines.append(f"{where}.kind: {exc}")
        except ValidationError as exc:
            lines.extend(f"{where}.{line}" for line in _error_lines(exc))
    return lines


_SECRET_HINTS = ("password", "secret", "token", "private")


def _error_lines(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = _format_loc(err["loc"])
        if err["type"] == "missing":
            lines.append(f"{loc}: missing; this key is required")
            continue
        value = err.get("input")
        if err["type"] == "duplicate_driver_name":
            loc, value = f"{loc}[{err['ctx']['index']}].name", err["ctx"]["name"]
        elif err["type"] == "broker_uri":
            loc, value = f"{loc}[{err['ctx']['index']}]", err["ctx"]["uri"]
        shown = "<hidden>" if any(h in loc.lower() for h in _SECRET_HINTS) else _short_repr(value)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see config/*.example.toml)"
        elif err["type"] == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == NAME:
            msg = "expected 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit"
        lines.append(f"{loc}: got {shown}; {msg}")
    return lines


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
