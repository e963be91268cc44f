"""Safety helpers every layer may use: secrets never leave a run, and names that become paths are plain names.

- `drop_secrets`: a copy of a config or record without any key that names a secret (W&B keys, HF tokens,
  `logger.api_key=...`), at any depth. Run configs, W&B run configs and store records all go through it.
- `wandb_settings`: W&B settings that keep the command line (where an override may hold a secret) out of a run.
- `check_plain_name`: a name that becomes a directory (results/<name>/) is a plain name, never a path.
"""

from __future__ import annotations

import re

from plmbench.errors import UserError

SECRET_WORDS = {"key", "apikey", "token", "secret", "password", "passwd", "credential", "credentials"}
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def key_words(name: str) -> list[str]:
    """`wandb_api_key` -> [wandb, api, key]; `authToken` -> [auth, token]."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", str(name))
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def is_secret_key(name: str) -> bool:
    """A key whose words include key/token/secret/password. Whole words only: `tokenizer` or `tokens_seen` stay, and
    so does a rate `per token` (`train_flops_per_token`), which names a unit, not a credential."""
    words = key_words(name)
    return any(word in SECRET_WORDS and not (word == "token" and i and words[i - 1] == "per")
               for i, word in enumerate(words))


def drop_secrets(value):
    """A copy of `value` without any mapping entry whose key names a secret, at any depth."""
    if isinstance(value, dict):
        return {k: drop_secrets(v) for k, v in value.items() if not is_secret_key(k)}
    if isinstance(value, (list, tuple)):
        return [drop_secrets(v) for v in value]
    return value


def check_plain_name(key: str, name: str) -> str:
    """An experiment's results live in results/<name>/: a plain name, never a path (`../../etc`, `/tmp/x`)."""
    if not PLAIN_NAME.fullmatch(name) or ".." in name:
        raise UserError(f"{key}={name!r}: must be a plain name (letters, digits, '_', '-', '.'), not a path")
    return name


def wandb_settings():
    """x_disable_meta: W&B's system metadata records the command line, where an override may hold a secret."""
    import wandb

    return wandb.Settings(init_timeout=60, silent=True, console="off", x_disable_meta=True)
