"""Administration on a data directory: ``certhub policy|enrollment|ca|namespace …``."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import json
import secrets
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from rich.table import Table

from certhub import views
from certhub.cli_common import (
    Refused,
    console,
    data_options,
    emit_json,
    json_option,
    open_authority,
)
from certhub.pki import KeyType, LeafPolicy, PolicyError, certificate_sha1, parse_duration
from certhub.registry.errors import AlreadyExists, EtagMismatch
from certhub.registry.errors import NotFound as StoreNotFound
from certhub.registry.records import (
    AttestationType,
    EnrollmentKind,
    EnrollmentRecord,
    NewEnrollment,
    PolicyRecord,
)

__all__ = ["enrollment_json", "policy_json", "register"]


def policy_json(p: PolicyRecord, issuer: dict[str, Any] | None = None) -> dict[str, Any]:
    """A policy as the CLI shows it (:func:`certhub.views.policy_json`, ISO timestamps)."""
    return views.policy_json(p, stamp=dt.datetime.isoformat, issuer=issuer)


def enrollment_json(e: EnrollmentRecord) -> dict[str, Any]:
    """An enrollment as the CLI shows it (:func:`certhub.views.enrollment_json`)."""
    return views.enrollment_json(e, stamp=dt.datetime.isoformat)


def _fmt_seconds(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# -- policy -----------------------------------------------------------------------


@click.group()
def policy() -> None:
    """Certificate policies: validity, key types, issuing CA."""


@policy.command("create")
@data_options
@click.argument("name")
@click.option("--validity", default="30d", show_default=True, help="Leaf validity: 30d, 12h, 120s.")
@click.option(
    "--key-types",
    default="p256,p384",
    show_default=True,
    help="Comma-separated: p256, p384, rsa2048, rsa3072.",
)
@click.option("--backdate", default="5m", show_default=True, help="notBefore backdating.")
@click.option(
    "--ca-key-type", type=click.Choice(["p256", "p384"]), default="p256", show_default=True
)
@json_option
def policy_create(
    data_dir: Path,
    database: str | None,
    name: str,
    validity: str,
    key_types: str,
    backdate: str,
    ca_key_type: str,
    as_json: bool,
) -> None:
    """Create a policy and its issuing CA."""
    with open_authority(data_dir, database) as ca:
        dev_profile = ca.store.get_setting("development") == "1"
        try:
            duration = parse_duration(validity)
            leaf = LeafPolicy.create(
                name,
                duration,
                [k.strip() for k in key_types.split(",") if k.strip()],
                backdate,
                development=dev_profile and duration.days < 7,
            )
        except PolicyError as exc:
            hint = ""
            if exc.reason == "validity-out-of-range" and not dev_profile:
                hint = " (validities under 7 days need the development profile: init --dev)"
            raise Refused(f"{exc}{hint}") from exc
        try:
            record = ca.create_policy(leaf, actor="cli", ca_key_type=KeyType(ca_key_type))
        except AlreadyExists as exc:
            raise Refused(f"policy {name!r} already exists") from exc
        _show_policy(ca, record, as_json)


def _issuer_info(ca: Any, p: PolicyRecord) -> dict[str, Any] | None:
    cas = ca.store.list_cas(p.namespace_id, kind="issuing", policy_id=p.id)
    if not cas:
        return None
    cur = cas[-1]
    return {
        "subject": cur.subject,
        "serial": cur.serial_hex,
        "notAfter": cur.not_after.isoformat(),
        "state": cur.state,
        "sha256": cur.sha256,
    }


def _show_policy(ca: Any, p: PolicyRecord, as_json: bool) -> None:
    info = _issuer_info(ca, p)
    if as_json:
        emit_json(policy_json(p, info))
        return
    table = Table(show_header=False, box=None)
    for k, v in policy_json(p, None).items():
        table.add_row(k, str(v))
    if info:
        table.add_row("issuingCa", f"{info['subject']} (until {info['notAfter']})")
    console.print(table)


@policy.command("list")
@data_options
@json_option
def policy_list(data_dir: Path, database: str | None, as_json: bool) -> None:
    """List policies."""
    with open_authority(data_dir, database) as ca:
        items = ca.store.list_policies(ca.namespace.id)
        if as_json:
            emit_json([policy_json(p, _issuer_info(ca, p)) for p in items])
            return
        table = Table("name", "validity", "key types", "backdate", "state")
        for p in items:
            table.add_row(
                p.name,
                _fmt_seconds(p.validity_seconds),
                ",".join(p.key_types),
                _fmt_seconds(p.backdate_seconds),
                p.state,
            )
        console.print(table)


@policy.command("show")
@data_options
@click.argument("name")
@json_option
def policy_show(data_dir: Path, database: str | None, name: str, as_json: bool) -> None:
    """Show one policy and its issuing CA."""
    with open_authority(data_dir, database) as ca:
        p = ca.store.get_policy(ca.namespace.id, name)
        if p is None:
            raise Refused(f"no policy named {name!r}")
        _show_policy(ca, p, as_json)


def _reason_option(fn: Any) -> Any:
    return click.option("--reason", help="Why (recorded in the audit log).")(fn)


def _lifecycle(ca: Any) -> Any:
    from certhub.issuer_lifecycle import IssuerLifecycle

    return IssuerLifecycle(ca)


def _ca_json(c: Any) -> dict[str, Any]:
    from certhub.service.admin import ca_json

    return ca_json(c)


def _show_change(change: Any, as_json: bool, verb: str) -> None:
    from certhub.service.admin import issuer_change_json

    if as_json:
        emit_json(issuer_change_json(change))
        return
    new = change.new_ca
    console.print(f"policy {change.policy.name}: {verb}; issuing CA now {new.subject}")
    console.print(f"  new CA serial {new.serial_hex}, valid until {new.not_after.isoformat()}")
    for old in change.previous:
        console.print(f"  previous CA serial {old.serial_hex}: {old.state}")
    if change.revoked_serials:
        console.print(f"  {len(change.revoked_serials)} certificates revoked")


@policy.command("revoke-issuer")
@data_options
@click.argument("name")
@_reason_option
@json_option
def policy_revoke_issuer(
    data_dir: Path, database: str | None, name: str, reason: str | None, as_json: bool
) -> None:
    """Revoke the policy's issuing CA: a new CA issues; the old one and its certificates
    are revoked, their sessions closed; devices must provision again through DPS."""
    with open_authority(data_dir, database) as ca:
        kwargs = {"reason": reason} if reason else {}
        try:
            change = _lifecycle(ca).revoke_issuer(name, actor="cli", **kwargs)
        except StoreNotFound as exc:
            raise Refused(f"no active policy named {name!r}") from exc
        _show_change(change, as_json, "issuer revoked")


@policy.command("rotate-issuer")
@data_options
@click.argument("name")
@_reason_option
@json_option
def policy_rotate_issuer(
    data_dir: Path, database: str | None, name: str, reason: str | None, as_json: bool
) -> None:
    """Planned rotation: a successor CA issues from now on; the old one stays trusted
    until its last certificate expires, then it is retired."""
    with open_authority(data_dir, database) as ca:
        try:
            change = _lifecycle(ca).rotate_issuer(name, actor="cli", reason=reason)
        except StoreNotFound as exc:
            raise Refused(f"no active policy named {name!r}") from exc
        _show_change(change, as_json, "issuer rotated")


@policy.command("delete")
@data_options
@click.argument("name")
@_reason_option
@json_option
def policy_delete(
    data_dir: Path, database: str | None, name: str, reason: str | None, as_json: bool
) -> None:
    """Delete a policy: nothing new is issued under it (DPS enrollments naming it fail);
    certificates it issued keep working until they expire."""
    with open_authority(data_dir, database) as ca:
        try:
            record = _lifecycle(ca).delete_policy(name, actor="cli", reason=reason)
        except StoreNotFound as exc:
            raise Refused(f"no active policy named {name!r}") from exc
        if as_json:
            emit_json(policy_json(record))
        else:
            console.print(f"deleted policy {name}")


@policy.command("retire-drained")
@data_options
@json_option
def policy_retire_drained(data_dir: Path, database: str | None, as_json: bool) -> None:
    """Retire drained issuing CAs (and orphaned old roots) now; the server checks each minute."""
    with open_authority(data_dir, database) as ca:
        retired = _lifecycle(ca).retire_drained(actor="cli")
        if as_json:
            emit_json([_ca_json(c) for c in retired])
        else:
            console.print(f"retired {len(retired)} issuing CA(s)")


@click.group("namespace")
def namespace_group() -> None:
    """The namespace: its root CA."""


@namespace_group.command("rotate-root")
@data_options
@_reason_option
@json_option
def namespace_rotate_root(
    data_dir: Path, database: str | None, reason: str | None, as_json: bool
) -> None:
    """Rotate the root with an overlap period: a new root and, under it, a new issuing CA
    per policy that issue from now on; the old root and its CAs stay trusted until their
    certificates expire, then they are retired."""
    with open_authority(data_dir, database) as ca:
        rotation = _lifecycle(ca).rotate_root(actor="cli", reason=reason)
        out = {
            "root": _ca_json(rotation.new_root),
            "previousRoots": [_ca_json(c) for c in rotation.previous],
            "issuingCas": [_ca_json(c) for c in rotation.issuers],
        }
        if as_json:
            emit_json(out)
        else:
            console.print(f"new root {rotation.new_root.subject} ({rotation.new_root.serial_hex})")
            console.print(f"  {len(rotation.issuers)} policy issuing CA(s) now signed by it")


@click.group("ca")
def ca_group() -> None:
    """The namespace's CAs: root, issuing, server."""


@ca_group.command("list")
@data_options
@click.option("--expiring-within", help="Only trusted CAs expiring within this time: 30d.")
@json_option
def ca_list(
    data_dir: Path, database: str | None, expiring_within: str | None, as_json: bool
) -> None:
    """List CAs (state, validity, revocation)."""
    with open_authority(data_dir, database) as ca:
        if expiring_within is None:
            items = ca.store.list_cas(ca.namespace.id)
        else:
            try:
                within = parse_duration(expiring_within)
            except PolicyError as exc:
                raise Refused(f"--expiring-within: {exc}") from exc
            items = _lifecycle(ca).expiring(within)
        if as_json:
            emit_json([_ca_json(c) for c in items])
            return
        table = Table("id", "kind", "subject", "state", "not after")
        for c in items:
            table.add_row(str(c.id), c.kind, c.subject, c.state, c.not_after.isoformat())
        console.print(table)


# -- enrollment -------------------------------------------------------------------


@click.group()
def enrollment() -> None:
    """DPS enrollments: groups and individual devices."""


def _b64_key(value: str | None, option: str) -> str:
    if value is None:
        return base64.b64encode(secrets.token_bytes(32)).decode()
    try:
        if len(base64.b64decode(value, validate=True)) < 16:
            raise Refused(f"{option}: a key must hold at least 16 bytes")
    except binascii.Error as exc:
        raise Refused(f"{option}: not valid base64") from exc
    return value


def _load_pem(path: Path, option: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise Refused(f"{option}: {path} is not a readable PEM certificate") from exc


REPROVISION_POLICIES: dict[str, dict[str, bool]] = {
    "migrate": {"updateHubAssignment": True, "migrateDeviceData": True},
    "reset": {"updateHubAssignment": True, "migrateDeviceData": False},
    "never": {"updateHubAssignment": False, "migrateDeviceData": True},
}
"""``--reprovision-policy`` choices and the ``reprovisionPolicy`` each stands for."""


def _initial_twin(text: str) -> dict[str, Any]:
    try:
        twin = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Refused(f"--initial-twin: not valid JSON ({exc.msg})") from exc
    if not isinstance(twin, dict) or set(twin) - {"tags", "properties"}:
        raise Refused("--initial-twin: expected an object with 'tags' and/or 'properties'")
    return twin


def _x509_material(cert_paths: tuple[Path, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    loaded = [_load_pem(p, "--certificate") for p in cert_paths]
    return tuple(p.read_text() for p in cert_paths), tuple(certificate_sha1(c) for c in loaded)


def _reprovision_option(fn: Any) -> Any:
    return click.option(
        "--reprovision-policy",
        type=click.Choice(sorted(REPROVISION_POLICIES)),
        help="On re-registration: migrate (keep the twin), reset (twin back to the "
        "initial twin) or never (keep the assignment and the twin).",
    )(fn)


@enrollment.command("create")
@data_options
@click.option("--group", "group", help="Create an enrollment group with this id.")
@click.option(
    "--individual", "individual", help="Create an individual enrollment (registration id)."
)
@click.option(
    "--attestation",
    type=click.Choice(["symmetricKey", "x509"]),
    default="symmetricKey",
    show_default=True,
)
@click.option(
    "--policy",
    "policy_name",
    default="default",
    show_default=True,
    help="credentialPolicyName: the policy that issues operational certificates.",
)
@click.option("--primary-key", help="Base64 key (generated when omitted).")
@click.option("--secondary-key", help="Base64 key (generated when omitted).")
@click.option(
    "--certificate",
    "cert_paths",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="x509: signing CA PEM (group, repeatable) or the device's certificate.",
)
@click.option("--initial-twin", help='JSON: {"tags": {…}, "properties": {"desired": {…}}}.')
@click.option("--disabled", is_flag=True, help="Create with provisioningStatus disabled.")
@_reprovision_option
@json_option
def enrollment_create(
    data_dir: Path,
    database: str | None,
    group: str | None,
    individual: str | None,
    attestation: str,
    policy_name: str,
    primary_key: str | None,
    secondary_key: str | None,
    cert_paths: tuple[Path, ...],
    initial_twin: str | None,
    disabled: bool,
    reprovision_policy: str | None,
    as_json: bool,
) -> None:
    """Create an enrollment group or an individual enrollment."""
    if (group is None) == (individual is None):
        raise Refused("give exactly one of --group or --individual")
    kind: EnrollmentKind = "group" if group else "individual"
    name = group or individual or ""
    twin: dict[str, Any] = _initial_twin(initial_twin) if initial_twin else {}
    certs: tuple[str, ...] = ()
    thumbs: tuple[str, ...] = ()
    primary: str | None = None
    secondary: str | None = None
    attestation_type: AttestationType = "x509" if attestation == "x509" else "symmetricKey"
    if attestation_type == "symmetricKey":
        if cert_paths:
            raise Refused("--certificate is only for x509 attestation")
        primary = _b64_key(primary_key, "--primary-key")
        secondary = _b64_key(secondary_key, "--secondary-key")
    else:
        if not cert_paths:
            raise Refused("x509 attestation needs --certificate")
        certs, thumbs = _x509_material(cert_paths)
    with open_authority(data_dir, database) as ca:
        ns = ca.namespace
        target = ca.store.get_policy(ns.id, policy_name)
        if target is None or target.state != "active":
            raise Refused(f"--policy: no active policy named {policy_name!r}")
        try:
            new = NewEnrollment(
                namespace_id=ns.id,
                kind=kind,
                name=name,
                attestation_type=attestation_type,
                x509_certificates=certs,
                x509_thumbprints=thumbs,
                credential_policy_name=policy_name,
                initial_twin=twin,
                provisioning_status="disabled" if disabled else "enabled",
                primary_key=primary,
                secondary_key=secondary,
                **(
                    {"reprovision_policy": REPROVISION_POLICIES[reprovision_policy]}
                    if reprovision_policy
                    else {}
                ),
            )
        except ValueError as exc:
            raise Refused(str(exc)) from exc
        try:
            record = ca.store.create_enrollment(new, ca.clock.now())
        except AlreadyExists as exc:
            raise Refused(f"{kind} enrollment {name!r} already exists") from exc
        _show_enrollment(record, as_json)


def _show_enrollment(e: EnrollmentRecord, as_json: bool) -> None:
    if as_json:
        emit_json(enrollment_json(e))
        return
    table = Table(show_header=False, box=None)
    for k, v in enrollment_json(e).items():
        table.add_row(k, json.dumps(v) if isinstance(v, dict) else str(v))
    console.print(table)


def _kind_option(fn: Any) -> Any:
    return click.option(
        "--group/--individual",
        "is_group",
        default=True,
        help="Which kind of enrollment NAME names (default: group).",
    )(fn)


@enrollment.command("list")
@data_options
@json_option
def enrollment_list(data_dir: Path, database: str | None, as_json: bool) -> None:
    """List enrollments."""
    with open_authority(data_dir, database) as ca:
        items = ca.store.list_enrollments(ca.namespace.id)
        if as_json:
            emit_json([enrollment_json(e) for e in items])
            return
        table = Table("kind", "name", "attestation", "policy", "status")
        for e in items:
            table.add_row(
                e.kind,
                e.name,
                e.attestation_type,
                e.credential_policy_name or "-",
                e.provisioning_status,
            )
        console.print(table)


@enrollment.command("show")
@data_options
@_kind_option
@click.argument("name")
@json_option
def enrollment_show(
    data_dir: Path, database: str | None, is_group: bool, name: str, as_json: bool
) -> None:
    """Show one enrollment."""
    with open_authority(data_dir, database) as ca:
        kind = "group" if is_group else "individual"
        e = ca.store.get_enrollment(ca.namespace.id, kind, name)
        if e is None:
            raise Refused(f"no {kind} enrollment named {name!r}")
        _show_enrollment(e, as_json)


def _enrollment_or_refuse(ca: Any, kind: EnrollmentKind, name: str) -> EnrollmentRecord:
    e: EnrollmentRecord | None = ca.store.get_enrollment(ca.namespace.id, kind, name)
    if e is None:
        raise Refused(f"no {kind} enrollment named {name!r}")
    return e


def _write_enrollment(
    ca: Any, e: EnrollmentRecord, etag: str | None, as_json: bool
) -> EnrollmentRecord:
    try:
        record: EnrollmentRecord = ca.store.update_enrollment(e, etag, now=ca.clock.now())
    except EtagMismatch as exc:
        raise Refused(f"--etag: the enrollment changed (current etag {exc.actual})") from exc
    except StoreNotFound as exc:
        raise Refused(f"no {e.kind} enrollment named {e.name!r}") from exc
    _show_enrollment(record, as_json)
    return record


def _etag_option(fn: Any) -> Any:
    return click.option("--etag", help="Only if the enrollment's etag is still this.")(fn)


@enrollment.command("update")
@data_options
@_kind_option
@click.argument("name")
@click.option("--policy", "policy_name", help="New credentialPolicyName.")
@click.option("--primary-key", help="New base64 primary key (symmetricKey).")
@click.option("--secondary-key", help="New base64 secondary key (symmetricKey).")
@click.option(
    "--certificate",
    "cert_paths",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="x509: replace the signing CA PEMs (group) or the device certificate.",
)
@click.option("--initial-twin", help="Replace the initial twin (JSON).")
@click.option("--status", type=click.Choice(["enabled", "disabled"]), help="provisioningStatus.")
@_reprovision_option
@_etag_option
@json_option
def enrollment_update(
    data_dir: Path,
    database: str | None,
    is_group: bool,
    name: str,
    policy_name: str | None,
    primary_key: str | None,
    secondary_key: str | None,
    cert_paths: tuple[Path, ...],
    initial_twin: str | None,
    status: str | None,
    reprovision_policy: str | None,
    etag: str | None,
    as_json: bool,
) -> None:
    """Change an enrollment: keys, certificates, policy, initial twin, status."""
    kind: EnrollmentKind = "group" if is_group else "individual"
    changes: dict[str, Any] = {}
    if initial_twin is not None:
        changes["initial_twin"] = _initial_twin(initial_twin)
    if status is not None:
        changes["provisioning_status"] = status
    if reprovision_policy is not None:
        changes["reprovision_policy"] = REPROVISION_POLICIES[reprovision_policy]
    with open_authority(data_dir, database) as ca:
        e = _enrollment_or_refuse(ca, kind, name)
        if e.attestation_type == "symmetricKey":
            if cert_paths:
                raise Refused("--certificate is only for x509 attestation")
            if primary_key is not None:
                changes["primary_key"] = _b64_key(primary_key, "--primary-key")
            if secondary_key is not None:
                changes["secondary_key"] = _b64_key(secondary_key, "--secondary-key")
        else:
            if primary_key is not None or secondary_key is not None:
                raise Refused("--primary-key/--secondary-key are only for symmetricKey")
            if cert_paths:
                certs, thumbs = _x509_material(cert_paths)
                changes.update(x509_certificates=certs, x509_thumbprints=thumbs)
        if policy_name is not None:
            target = ca.store.get_policy(ca.namespace.id, policy_name)
            if target is None or target.state != "active":
                raise Refused(f"--policy: no active policy named {policy_name!r}")
            changes["credential_policy_name"] = policy_name
        if not changes:
            raise Refused("nothing to change: give at least one option")
        _write_enrollment(ca, dataclasses.replace(e, **changes), etag, as_json)


@enrollment.command("disable")
@data_options
@_kind_option
@click.argument("name")
@_etag_option
@json_option
def enrollment_disable(
    data_dir: Path,
    database: str | None,
    is_group: bool,
    name: str,
    etag: str | None,
    as_json: bool,
) -> None:
    """Set provisioningStatus disabled: DPS refuses its devices (status "disabled")."""
    kind: EnrollmentKind = "group" if is_group else "individual"
    with open_authority(data_dir, database) as ca:
        e = _enrollment_or_refuse(ca, kind, name)
        _write_enrollment(ca, dataclasses.replace(e, provisioning_status="disabled"), etag, as_json)


@enrollment.command("delete")
@data_options
@_kind_option
@click.argument("name")
@_etag_option
@json_option
def enrollment_delete(
    data_dir: Path,
    database: str | None,
    is_group: bool,
    name: str,
    etag: str | None,
    as_json: bool,
) -> None:
    """Delete an enrollment (its devices stay; they can no longer register through it)."""
    kind: EnrollmentKind = "group" if is_group else "individual"
    with open_authority(data_dir, database) as ca:
        try:
            ca.store.delete_enrollment(ca.namespace.id, kind, name, etag)
        except EtagMismatch as exc:
            raise Refused(f"--etag: the enrollment changed (current etag {exc.actual})") from exc
        except StoreNotFound as exc:
            raise Refused(f"no {kind} enrollment named {name!r}") from exc
    if as_json:
        emit_json({"deleted": {"kind": kind, "name": name}})
    else:
        console.print(f"deleted {kind} enrollment {name}")


def register(cli: click.Group) -> None:
    """Attach the groups to the top-level command."""
    cli.add_command(policy)
    cli.add_command(enrollment)
    cli.add_command(ca_group)
    cli.add_command(namespace_group)
