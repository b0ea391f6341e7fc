"""Leaf certificate policies.

A policy says how long a device's leaf lives, which device key types it accepts and
how far ``notBefore`` is backdated to tolerate device clock skew. It mirrors the ADR
policy resource (``leafCertificateConfiguration.validityPeriodInDays`` 7..90, name
3..63 characters) and adds a *development* profile that allows validities down to one
minute, so fleet simulations run on short real certificates rather than a fake clock.

A :class:`LeafPolicy` validates itself on construction; :meth:`LeafPolicy.create` also
accepts configuration spellings (key type strings, duration strings like ``"30d"``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from .errors import PolicyError
from .keys import KeyType

__all__ = [
    "DEFAULT_BACKDATE",
    "DEFAULT_LEAF_KEY_TYPES",
    "LeafPolicy",
    "parse_duration",
]

DEFAULT_LEAF_KEY_TYPES: frozenset[KeyType] = frozenset({KeyType.P256, KeyType.P384})
DEFAULT_BACKDATE = timedelta(minutes=5)

_NAME = re.compile(r"[0-9a-zA-Z][a-zA-Z0-9-]{2,62}")
_DURATION = re.compile(r"([0-9]{1,9})([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}

_MIN_VALIDITY = timedelta(days=7)
_MIN_DEV_VALIDITY = timedelta(seconds=60)
_MAX_VALIDITY = timedelta(days=90)
_MAX_BACKDATE = timedelta(days=1)


def parse_duration(text: str) -> timedelta:
    """Parse ``"<n>s"``, ``"<n>m"``, ``"<n>h"`` or ``"<n>d"`` (surrounding blanks allowed)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise PolicyError("invalid-duration", f"not a duration: {text!r} (use e.g. 30d, 12h)")
    amount, unit = match.groups()
    try:
        return timedelta(**{_UNITS[unit]: int(amount)})
    except OverflowError as exc:
        raise PolicyError("invalid-duration", f"duration too large: {text!r}") from exc


def _key_type(value: KeyType | str) -> KeyType:
    try:
        return KeyType(value)
    except ValueError as exc:
        known = ", ".join(kt.value for kt in KeyType)
        raise PolicyError("unknown-key-type", f"unknown key type {value!r} ({known})") from exc


def _duration(value: timedelta | str) -> timedelta:
    return parse_duration(value) if isinstance(value, str) else value


@dataclass(frozen=True, kw_only=True)
class LeafPolicy:
    """How the authority issues leaves under one policy (validated on construction)."""

    name: str
    validity: timedelta
    key_types: frozenset[KeyType] = field(default=DEFAULT_LEAF_KEY_TYPES)
    backdate: timedelta = DEFAULT_BACKDATE
    development: bool = False

    def __post_init__(self) -> None:
        self._check_name()
        self._check_validity()
        self._check_key_types()
        self._check_backdate()

    @classmethod
    def create(
        cls,
        name: str,
        validity: timedelta | str,
        key_types: Iterable[KeyType | str] = DEFAULT_LEAF_KEY_TYPES,
        backdate: timedelta | str = DEFAULT_BACKDATE,
        development: bool = False,
    ) -> LeafPolicy:
        """Build a policy from configuration values; raises :class:`PolicyError`."""
        return cls(
            name=name,
            validity=_duration(validity),
            key_types=frozenset(_key_type(kt) for kt in key_types),
            backdate=_duration(backdate),
            development=development,
        )

    @property
    def min_validity(self) -> timedelta:
        """The shortest validity this policy's profile allows."""
        return _MIN_DEV_VALIDITY if self.development else _MIN_VALIDITY

    def _check_name(self) -> None:
        if not isinstance(self.name, str) or _NAME.fullmatch(self.name) is None:
            raise PolicyError(
                "invalid-name",
                f"policy name {self.name!r} must be 3-63 letters, digits or '-', "
                "starting with a letter or digit",
            )

    def _check_validity(self) -> None:
        if not self.min_validity <= self.validity <= _MAX_VALIDITY:
            profile = "development" if self.development else "production"
            raise PolicyError(
                "validity-out-of-range",
                f"validity {self.validity} outside {self.min_validity}..{_MAX_VALIDITY} "
                f"({profile} profile)",
            )

    def _check_key_types(self) -> None:
        # Normalise strings ("p256") and plain sets to frozenset[KeyType].
        key_types = frozenset(_key_type(kt) for kt in self.key_types)
        if not key_types:
            raise PolicyError("no-key-types", "a policy must allow at least one key type")
        object.__setattr__(self, "key_types", key_types)

    def _check_backdate(self) -> None:
        if not timedelta(0) <= self.backdate <= _MAX_BACKDATE:
            raise PolicyError(
                "backdate-out-of-range", f"backdate {self.backdate} outside 0..{_MAX_BACKDATE}"
            )
