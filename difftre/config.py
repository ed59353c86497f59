"""Configuration files: TOML, validated against a schema so that a missing or
mistyped field, a wrong type or an impossible value is one clear error naming it."""
import tomllib


class ConfigError(ValueError):
    """A configuration file does not match its schema."""


def positive(value):
    return value > 0


def non_negative(value):
    return value >= 0


def load_config(path, schema):
    """Parse a TOML file and check it against schema {section: {field: (type, check or None)}}."""
    try:
        with open(path, "rb") as handle:
            config = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    validate(config, schema, str(path))
    return config


def validate(config, schema, source="config"):
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
        for name, (kind, check) in fields.items():
            if name not in values:
                raise ConfigError(f"{source}: missing field {section}.{name}")
            value = values[name]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = values[name] = float(value)
            if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
                raise ConfigError(f"{source}: field {section}.{name} must be {kind.__name__}, got {value!r}")
            if check is not None and not (check(value) if callable(check) else value in check):
                what = check.__name__.replace("_", " ") if callable(check) else f"one of {sorted(check)}"
                raise ConfigError(f"{source}: field {section}.{name} = {value!r} must be {what}")
    return config
