"""Assignment: what one attested registration does to the registry, in one transaction.

Shaped as one function over one connection so that the device (created or updated),
its twin (initial, kept or reset), the certificate (issued by the authority under the
enrollment's credential policy) and the registration record commit together or not
at all: a refused CSR leaves no half-created device behind.

Re-provisioning (a registration id that was assigned before and whose device still
exists) follows the enrollment's ``reprovisionPolicy``; with one hub:

==========================  =====================  ===================================
updateHubAssignment          migrateDeviceData      result
==========================  =====================  ===================================
false                        (ignored)              ``reprovisionedToInitialAssignment``,
                                                    twin kept
true                         true                   ``deviceDataMigrated``, twin kept
true                         false                  ``deviceDataReset``, twin reset to the
                                                    initial twin (reported emptied)
==========================  =====================  ===================================
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from sqlalchemy.engine import Connection

from certhub.authority import CertificateAuthorityService
from certhub.dps.attestation import Attestation
from certhub.dps.errors import BadRequest, Conflict, InternalError, NotFound
from certhub.dps.presign import Presigned, actor_of, usable
from certhub.dps.wire import RegisterRequest, utc_text
from certhub.pki import CsrRejected, IssuanceError, IssuedLeaf, chain_base64
from certhub.rand import Random
from certhub.registry import Store
from certhub.registry import errors as store_errors
from certhub.registry._dps import DpsRegistrationRecord, NewDpsRegistration
from certhub.registry.records import DeviceRecord, EnrollmentRecord, NewDevice

__all__ = ["Assigner", "Outcome", "TwinAction", "registration_state", "reprovision_outcome"]

ENROLLMENT_DISABLED = 401003
DEVICE_DISABLED = 401004


class TwinAction(enum.Enum):
    """What a registration does to an existing device's twin."""

    INITIAL = "initial"  # first assignment of an existing device: apply the initial twin
    KEEP = "keep"
    RESET = "reset"  # tags and desired from the initial twin, reported emptied


def reprovision_outcome(policy: Mapping[str, bool]) -> tuple[str, TwinAction]:
    """Substatus and twin action of a re-provisioning under ``policy``."""
    if not policy.get("updateHubAssignment", True):
        return "reprovisionedToInitialAssignment", TwinAction.KEEP
    if policy.get("migrateDeviceData", True):
        return "deviceDataMigrated", TwinAction.KEEP
    return "deviceDataReset", TwinAction.RESET


@dataclass(frozen=True)
class Outcome:
    """The final status of one registration and its ``registrationState``."""

    status: Literal["assigned", "disabled"]
    registration_state: dict[str, Any]
    certificate_serial: str | None = None


def registration_state(rec: DpsRegistrationRecord) -> dict[str, Any]:
    """``DeviceRegistrationResult`` of a stored record (never with a certificate chain)."""
    state: dict[str, Any] = {
        "registrationId": rec.registration_id,
        "createdDateTimeUtc": utc_text(rec.created_at),
        "assignedHub": rec.assigned_hub,
        "deviceId": rec.device_id,
        "status": rec.status,
        "substatus": rec.substatus,
        "errorCode": rec.error_code,
        "errorMessage": rec.error_message,
        "lastUpdatedDateTimeUtc": utc_text(rec.updated_at),
        "etag": rec.etag,
        **rec.attestation,
    }
    if rec.status != "assigned":
        state.pop("assignedHub")
        state.pop("deviceId")
    return {k: v for k, v in state.items() if v is not None}


def _initial(enrollment: EnrollmentRecord) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    twin = enrollment.initial_twin or {}
    tags = twin.get("tags")
    desired = (twin.get("properties") or {}).get("desired")
    return (
        dict(tags) if isinstance(tags, dict) else None,
        dict(desired) if isinstance(desired, dict) else None,
    )


def _policy_for(enrollment: EnrollmentRecord, req: RegisterRequest) -> str | None:
    """The policy to sign the request's CSR with (None: no CSR); 400005 if there is none."""
    if req.csr_der is None:
        return None
    if not enrollment.credential_policy_name:
        raise BadRequest(
            "the enrollment has no credential policy to issue with",
            reason="no-credential-policy",
            error_code=400005,
        )
    return enrollment.credential_policy_name


def _with_chain(state: dict[str, Any], leaf: IssuedLeaf | None, in_payload: bool) -> dict[str, Any]:
    """``registrationState`` plus the issued chain (also in ``payload`` when asked there)."""
    if leaf is not None:
        chain = chain_base64(leaf)
        state["issuedCertificateChain"] = chain
        if in_payload:
            state["payload"] = {"issuedCertificateChain": chain}
    return state


class Assigner:
    """Runs one registration's writes inside the caller's transaction."""

    def __init__(
        self,
        store: Store,
        authority: CertificateAuthorityService,
        *,
        hub_host: str,
        rng: Random,
    ) -> None:
        self._store = store
        self._authority = authority
        self._hub_host = hub_host
        self._rng = rng

    def assign(
        self,
        conn: Connection,
        att: Attestation,
        req: RegisterRequest,
        now: dt.datetime,
        presigned: Presigned | None = None,
    ) -> Outcome:
        """Assign (or refuse) the registration; raises DpsError for a bad request.

        ``presigned``: the CSR's leaf signed before the transaction
        (:mod:`certhub.dps.presign`); recorded if still valid, else the CSR is signed here.
        """
        enrollment = self._current_enrollment(conn, att)
        record = self._store.get_dps_registration(
            att.namespace_id, att.registration_id, conn=conn, for_update=True
        )
        device, refusal = self._device_or_refusal(conn, att, enrollment, record, now)
        if refusal is not None:
            return refusal
        policy_name = _policy_for(enrollment, req)
        substatus, action = "initialAssignment", TwinAction.INITIAL
        if device is not None and record is not None and record.first_assigned_at:
            substatus, action = reprovision_outcome(enrollment.reprovision_policy)
        new_rid = presigned.signed.revocation_id if presigned and presigned.new_device else None
        device = self._upsert_device(conn, att, enrollment, device, req, action, now, new_rid)
        leaf = None
        if policy_name is not None:
            leaf = self._issue(conn, att, device, req, policy_name, presigned)
        new = NewDpsRegistration(
            namespace_id=att.namespace_id,
            registration_id=att.registration_id,
            device_id=device.device_id,
            enrollment_id=enrollment.id,
            attestation_type=att.attestation_type,
            status="assigned",
            substatus=substatus,
            assigned_hub=self._hub_host,
            attestation=att.state_info(),
        )
        rec = self._store.save_dps_registration(
            new, now, conn=conn, previous=record, known_new=record is None
        )
        state = _with_chain(registration_state(rec), leaf, req.csr_in_payload)
        return Outcome("assigned", state, None if leaf is None else leaf.serial_hex)

    # -- steps ------------------------------------------------------------------------

    def _current_enrollment(self, conn: Connection, att: Attestation) -> EnrollmentRecord:
        """The attested enrollment, re-read only if it changed since (etag)."""
        etag = self._store.enrollment_etag(att.enrollment_id, conn=conn)
        enrollment = att.enrollment
        if etag is not None and (enrollment is None or enrollment.etag != etag):
            enrollment = self._store.get_enrollment_by_id(att.enrollment_id, conn=conn)
        if etag is None or enrollment is None:
            raise NotFound(
                "the enrollment was deleted", reason="enrollment-not-found", error_code=404001
            )
        return enrollment

    def _device_or_refusal(
        self,
        conn: Connection,
        att: Attestation,
        enrollment: EnrollmentRecord,
        record: DpsRegistrationRecord | None,
        now: dt.datetime,
    ) -> tuple[DeviceRecord | None, Outcome | None]:
        """The existing device (None if new), or the refusal of a disabled one."""
        if enrollment.provisioning_status == "disabled":
            message = "the enrollment is disabled"
            return None, self._refuse(conn, att, ENROLLMENT_DISABLED, message, now, record)
        probe = self._store.device_probe(att.registration_id, conn=conn)
        if probe is None:
            return None, None
        if probe[0] != att.namespace_id:
            raise Conflict(
                f"device {att.registration_id!r} belongs to another namespace",
                reason="device-in-other-namespace",
            )
        if probe[1] == "disabled":
            message = "the device is disabled"
            return None, self._refuse(conn, att, DEVICE_DISABLED, message, now, record)
        return self._store.get_device(att.registration_id, conn=conn), None

    def _refuse(
        self,
        conn: Connection,
        att: Attestation,
        code: int,
        message: str,
        now: dt.datetime,
        previous: DpsRegistrationRecord | None,
    ) -> Outcome:
        rec = self._store.save_dps_registration(
            NewDpsRegistration(
                namespace_id=att.namespace_id,
                registration_id=att.registration_id,
                device_id=att.registration_id,
                enrollment_id=att.enrollment_id,
                attestation_type=att.attestation_type,
                status="disabled",
                error_code=code,
                error_message=message,
                attestation=att.state_info(),
            ),
            now,
            conn=conn,
            previous=previous,
            known_new=previous is None,
        )
        return Outcome("disabled", registration_state(rec))

    def _credentials(self, att: Attestation, req: RegisterRequest) -> dict[str, Any]:
        """The device's authentication after this registration."""
        none: dict[str, Any] = {
            "primary_key": None,
            "secondary_key": None,
            "primary_thumbprint": None,
            "secondary_thumbprint": None,
        }
        if req.csr_der is not None:
            return {**none, "auth_type": "certificateAuthority"}
        if att.device_keys is not None:
            primary, secondary = att.device_keys
            return {**none, "auth_type": "sas", "primary_key": primary, "secondary_key": secondary}
        return {**none, "auth_type": "selfSigned", "primary_thumbprint": att.thumbprint}

    def _upsert_device(
        self,
        conn: Connection,
        att: Attestation,
        enrollment: EnrollmentRecord,
        device: DeviceRecord | None,
        req: RegisterRequest,
        action: TwinAction,
        now: dt.datetime,
        new_revocation_id: bytes | None = None,
    ) -> DeviceRecord:
        creds = self._credentials(att, req)
        link: dict[str, Any] = {
            "policy_name": enrollment.credential_policy_name,
            "enrollment_id": enrollment.id,
        }
        tags, desired = _initial(enrollment)
        if device is None:
            new = NewDevice(
                device_id=att.registration_id,
                namespace_id=att.namespace_id,
                revocation_id=new_revocation_id or self._rng.token_bytes(32),
                initial_tags=tags or {},
                initial_desired=desired or {},
                **creds,
                **link,
            )
            return self._store.create_device(new, now, conn=conn)
        updated = self._store.update_device(
            replace(device, **creds, **link), None, now=now, conn=conn
        )
        if action is TwinAction.RESET:
            self._store.replace_twin_sections(
                device.device_id,
                now=now,
                tags=tags or {},
                desired=desired or {},
                reported={},
                conn=conn,
            )
        elif action is TwinAction.INITIAL and (tags is not None or desired is not None):
            self._store.replace_twin_sections(
                device.device_id, now=now, tags=tags, desired=desired, conn=conn
            )
        return updated

    def _issue(
        self,
        conn: Connection,
        att: Attestation,
        device: DeviceRecord,
        req: RegisterRequest,
        policy_name: str,
        presigned: Presigned | None,
    ) -> IssuedLeaf:
        assert req.csr_der is not None
        actor = actor_of(att)
        ok = usable(
            presigned,
            conn,
            store=self._store,
            authority=self._authority,
            device=device,
            policy_name=policy_name,
            actor=actor,
        )
        if ok and presigned is not None:
            recorded = self._authority.record_batch([presigned.signed], conn=conn)[0]
            assert isinstance(recorded, IssuedLeaf)
            return recorded
        try:
            return self._authority.issue(
                device_id=device.device_id,
                csr_der=req.csr_der,
                policy_name=policy_name,
                requested_via="dps",
                actor=actor,
                revocation_id=device.revocation_id,
                conn=conn,
            )
        except CsrRejected as exc:
            raise BadRequest(
                f"CSR rejected ({exc.reason}): {exc.message}", reason=exc.reason, error_code=400004
            ) from exc
        except IssuanceError as exc:
            if exc.reason == "invalid-common-name":
                raise BadRequest(
                    f"CSR rejected ({exc.reason}): {exc.message}",
                    reason=exc.reason,
                    error_code=400004,
                ) from exc
            raise InternalError(f"issuance failed: {exc.message}", reason=exc.reason) from exc
        except store_errors.NotFound as exc:
            raise BadRequest(
                f"credential policy unusable: {exc}",
                reason="no-credential-policy",
                error_code=400005,
            ) from exc
