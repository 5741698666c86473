"""The ``golden`` profile: will this image deploy and come up as a clean, generalized VM?

The host's config against the disk (``host/bootfit.py``: generation, Secure Boot template,
encryption); Windows: setup (sysprep) state, pending reboots and the BCD store
(``guest/windows/golden.py``); Linux: generalization (``guest/linux/generalization.py``). The
findings get the profile's severities here; a policy's ``[params]`` for
``golden.windows.setup.image_state`` (``accept = [...]``) names the image states a gate takes.
"""

from __future__ import annotations

from offline_ic.checks.model import CheckResult
from offline_ic.checks.policy import Policy
from offline_ic.checks.profiles import Finding, Profile
from offline_ic.errors import InputError
from offline_ic.guest.linux.generalization import LOG_LIMIT_MIB, generalization_findings
from offline_ic.guest.linux.guest import LinuxGuest
from offline_ic.guest.windows.golden import GENERALIZED, IMAGE_STATES, golden_windows_findings
from offline_ic.guest.windows.guest import WindowsGuest
from offline_ic.host.bootfit import (
    encryption_finding,
    generation_finding,
    secure_boot_finding,
    vtpm_finding,
)
from offline_ic.host.vmcx import HostConfig
from offline_ic.image.base import DiskImage
from offline_ic.volumes import list_volumes

STATE_CHECK = "golden.windows.setup.image_state"
LOG_CHECK = "golden.linux.logfiles"


def accepted_image_states(policy: Policy | None) -> tuple[str, ...]:
    """The image states a gate accepts: the policy's ``accept`` list, else the generalized one."""
    value = policy.param(STATE_CHECK, "accept") if policy is not None else None
    if value is None:
        return (GENERALIZED,)
    states = (value,) if isinstance(value, str) else value
    if not isinstance(states, tuple) or not all(isinstance(s, str) for s in states):
        raise InputError(f'policy: [params."{STATE_CHECK}"] accept must be a list of states')
    unknown = [s for s in states if s not in IMAGE_STATES]
    if unknown:
        raise InputError(
            f'policy: [params."{STATE_CHECK}"] accept: unknown state {unknown[0]} '
            f"(known: {', '.join(IMAGE_STATES)})"
        )
    return states


def golden_results(
    profile: Profile,
    image: DiskImage | None,
    guest: WindowsGuest | LinuxGuest,
    host: HostConfig | None,
    policy: Policy | None,
) -> list[CheckResult]:
    """The ``golden`` profile's results for an opened guest."""
    findings: list[Finding] = []
    family = "windows" if isinstance(guest, WindowsGuest) else "linux"
    volumes = list_volumes(image) if image is not None else None
    style = volumes[0].scheme if volumes and volumes[0].scheme != "none" else None
    findings += [
        generation_finding(host, style, family, volumes or []),
        secure_boot_finding(host, family),
        vtpm_finding(host),
        encryption_finding(volumes),
    ]
    if isinstance(guest, WindowsGuest):
        findings += golden_windows_findings(guest, accepted_image_states(policy))
    else:
        findings += generalization_findings(guest.fs, log_limit_mib(policy))
    return profile.resolve(findings)


def log_limit_mib(policy: Policy | None) -> int:
    """``[params."golden.linux.logfiles"] max_mib``: a larger log file is reported."""
    value = policy.param(LOG_CHECK, "max_mib") if policy is not None else None
    if value is None:
        return LOG_LIMIT_MIB
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InputError(f'policy: [params."{LOG_CHECK}"] max_mib must be a whole number >= 0')
    return value
