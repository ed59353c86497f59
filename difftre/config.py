"""Configuration files: TOML, merged onto an experiment's defaults and validated against its schema,
so that a missing or mistyped field, a wrong type or an impossible value is one clear error naming
the file, the field and the rule.

A schema is {section: {field: (type, rule or None)}}; a rule is a set of allowed values or a
``Rule`` (a check and the words that name it: "must be in (0, 1e5]"). Every float must be finite,
whatever its rule. Checks that involve several fields or the machine (sizes, memory, time step
against the system) are ``difftre.resources``'s and the experiments' ``check_resources``.
"""
import math
import re
import tomllib
from typing import Callable, NamedTuple


class ConfigError(ValueError):
    """A configuration file or override does not match its schema."""


class Rule(NamedTuple):
    """A check on one value and its description, completing "must be ..."."""
    check: Callable
    description: str


positive = Rule(lambda value: value > 0, "positive")
non_negative = Rule(lambda value: value >= 0, "non-negative")


def in_range(low, high, closed_low=True, closed_high=True):
    """The rule low <= value <= high (each end open or closed), named "in [low, high]"."""
    brackets = ("[" if closed_low else "(", "]" if closed_high else ")")
    text = lambda bound: f"{bound:g}" if isinstance(bound, float) else str(bound)
    return Rule(lambda value: (low <= value if closed_low else low < value)
                and (value <= high if closed_high else value < high),
                f"in {brackets[0]}{text(low)}, {text(high)}{brackets[1]}")


def positive_up_to(high):
    """The rule 0 < value <= high."""
    return in_range(0, high, closed_low=False)


def path_or_empty(suffix):
    """The rule: "" (the packaged default) or the path of a file ending in ``suffix``."""
    return Rule(lambda value: value == "" or value.endswith(suffix), f"\"\" or a path ending in {suffix}")


# Fields every DiffTRe experiment shares (the runner's contract), spread into each schema's sections.
SEED_FIELD = {"seed": (int, in_range(0, 2 ** 32 - 1))}
TRAJECTORY_FIELDS = {"n_equilibration": (int, in_range(0, 10 ** 9)), "n_frames": (int, in_range(1, 10 ** 7)),
                     "stride": (int, in_range(1, 10 ** 6)), "dtype": (str, {"float32", "float64"}),
                     "device": (str, {"cpu", "cuda"}), "replicas": (int, in_range(1, 10 ** 4)),
                     "barostat_interval": (int, in_range(0, 10 ** 6)), "pressure": (float, in_range(0.0, 1e9))}
TRAINING_FIELDS = {"n_updates": (int, in_range(0, 10 ** 6)), "learning_rate": (float, positive_up_to(100.0)),
                   "decay_updates": (int, in_range(1, 10 ** 6)),
                   "adam_b1": (float, in_range(0, 1, closed_high=False)),
                   "adam_b2": (float, in_range(0, 1, closed_high=False)),
                   "smoothness": (float, in_range(0.0, 1e6)),
                   "resample_threshold": (float, in_range(0, 1, closed_low=False)),
                   "chunk_size": (int, in_range(1, 10 ** 5))}


def refuse(source, field, value, rule):
    """The ConfigError of ``field`` = ``value`` breaking ``rule`` (words completing "must be ...")."""
    return ConfigError(f"{source}: field {field} = {value!r} must be {rule}")


def read_toml(path):
    """The TOML file at ``path`` as a dict, or a ConfigError naming the file (and line) of the problem."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a TOML file") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start}); TOML files are UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {_describe_toml_error(error, text)}") from None


def _describe_toml_error(error, text):
    """tomllib's message with the offending line, and the key where it is defined twice."""
    message = str(error)
    line = re.search(r"line (\d+)", message)
    content = text.splitlines()[int(line.group(1)) - 1:int(line.group(1))] if line else []
    if not content:
        return message
    content = content[0].strip()
    key = re.match(r"\[*\s*([^=\]]+?)\s*(=|\])", content)
    if key and message.startswith(("Cannot overwrite a value", "Cannot declare")):
        return f"duplicate key {key.group(1)!r} ({message} in {content!r})"
    return f"{message} in {content!r}"


def merge(defaults, partial, source):
    """``defaults`` with the sections and fields of ``partial`` replaced; a section or field that the
    defaults do not have is an error naming ``source``."""
    merged = {section: dict(fields) if isinstance(fields, dict) else fields for section, fields in defaults.items()}
    for section, fields in partial.items():
        if section not in defaults or not isinstance(defaults[section], dict):
            raise ConfigError(f"{source}: unknown section [{section}] (expected one of {sorted(defaults)})")
        if not isinstance(fields, dict):
            raise ConfigError(f"{source}: [{section}] must be a table of fields, got {fields!r}")
        for name, value in fields.items():
            if name not in defaults[section]:
                raise ConfigError(f"{source}: unknown field {section}.{name} "
                                  f"(expected one of {sorted(defaults[section])})")
            merged[section][name] = value
    return merged


def load_config(path, schema):
    """Parse a complete TOML file and check it against ``schema``."""
    return validate(read_toml(path), schema, str(path))


def validate(config, schema, source="config"):
    """Check ``config`` against ``schema`` (ints given for floats become floats); returns it."""
    for section in config:
        if section not in schema:
            raise ConfigError(f"{source}: unknown section [{section}] (expected one of {sorted(schema)})")
    for section, fields in schema.items():
        values = config.get(section)
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: missing section [{section}]")
        for name in values:
            if name not in fields:
                raise ConfigError(f"{source}: unknown field {section}.{name} (expected one of {sorted(fields)})")
        for name, (kind, rule) in fields.items():
            if name not in values:
                raise ConfigError(f"{source}: missing field {section}.{name}")
            value = values[name]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = values[name] = float(value)
            if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
                raise ConfigError(f"{source}: field {section}.{name} must be {kind.__name__}, got {value!r}")
            if kind is float and not math.isfinite(value):
                raise ConfigError(f"{source}: field {section}.{name} = {value!r} must be finite")
            if isinstance(rule, Rule):
                ok, what = rule.check(value), rule.description
            elif isinstance(rule, (set, frozenset)):
                ok, what = value in rule, f"one of {sorted(rule)}"
            else:
                raise TypeError(f"schema rule of {section}.{name} must be a config.Rule or a set, got {rule!r}")
            if not ok:
                raise refuse(source, f"{section}.{name}", value, what)
    return config
